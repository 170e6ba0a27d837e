package dataset

import (
	"context"
	"sync"
	"time"
)

// blockCache shares the dataset blocks that map tasks read. A block is
// read whole, however little of it a split needs, so a job of many more
// splits than blocks read each block once per split: 5,000 map tasks over
// 6 MB read 15 GB, 46 s of a job that needed 6 MB, and a worker process
// on another machine pulls it all over the network. Reads of one block at
// the same time share one read; a block asked for again within blockKeep
// of a read, or by a task that joined its read, is kept until it has not
// been asked for in blockKeep (at most cachedBlocks of them). A job of
// large splits reads each block once, or twice at a split's bound, and
// keeps next to nothing.
type blockCache struct {
	mu    sync.Mutex
	reads map[string]*blockRead // in flight, by name
	asked map[string]time.Time  // when each block was last read
	kept  []keptBlock
	sweep *time.Timer // drops what was not asked for in blockKeep
}

type blockRead struct {
	done   chan struct{}
	b      []byte
	err    error
	joined bool // another task waits for the same read
}

type keptBlock struct {
	name string
	b    []byte // shared: read only
	used time.Time
}

const (
	cachedBlocks = 4
	blockKeep    = 2 * time.Second
	// maxAsked bounds the names remembered between expiries.
	maxAsked = 1024
)

// get returns block name, read with read unless it is kept or being read;
// the bytes are shared and must not be changed.
func (c *blockCache) get(ctx context.Context, name string, read func(context.Context) ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	now := time.Now()
	c.expire(now)
	for i := range c.kept {
		if c.kept[i].name == name {
			c.kept[i].used = now
			b := c.kept[i].b
			c.mu.Unlock()
			return b, nil
		}
	}
	if r, ok := c.reads[name]; ok {
		r.joined = true
		c.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if r.err == nil {
			return r.b, nil
		}
		// The reader's failure may be its own (its task canceled, its
		// deadline): this task reads for itself.
		return read(ctx)
	}
	at, asked := c.asked[name]
	again := asked && now.Sub(at) < blockKeep
	if c.asked == nil || len(c.asked) >= maxAsked {
		c.asked = map[string]time.Time{}
	}
	c.asked[name] = now
	r := &blockRead{done: make(chan struct{})}
	if c.reads == nil {
		c.reads = map[string]*blockRead{}
	}
	c.reads[name] = r
	c.mu.Unlock()

	r.b, r.err = read(ctx)
	c.mu.Lock()
	delete(c.reads, name)
	if r.err == nil && (again || r.joined) {
		c.keep(name, r.b, time.Now())
	}
	c.mu.Unlock()
	close(r.done)
	return r.b, r.err
}

// keep adds a block, dropping the least recently used past cachedBlocks.
// c.mu must be held.
func (c *blockCache) keep(name string, b []byte, now time.Time) {
	if len(c.kept) >= cachedBlocks {
		old := 0
		for i := range c.kept {
			if c.kept[i].used.Before(c.kept[old].used) {
				old = i
			}
		}
		c.kept = append(c.kept[:old], c.kept[old+1:]...)
	}
	c.kept = append(c.kept, keptBlock{name, b, now})
	if c.sweep == nil {
		c.sweep = time.AfterFunc(blockKeep, c.swept)
	}
}

// swept drops what was not asked for in blockKeep, and looks again while
// something is kept: an idle worker holds no block.
func (c *blockCache) swept() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(time.Now())
	if len(c.kept) > 0 {
		c.sweep.Reset(blockKeep)
		return
	}
	c.sweep = nil
}

// expire drops the kept blocks and the names not asked for in blockKeep.
// c.mu must be held.
func (c *blockCache) expire(now time.Time) {
	kept := c.kept[:0]
	for _, k := range c.kept {
		if now.Sub(k.used) < blockKeep {
			kept = append(kept, k)
		}
	}
	clear(c.kept[len(kept):])
	c.kept = kept
	if len(c.kept) == 0 {
		c.kept = nil
	}
	for name, at := range c.asked {
		if now.Sub(at) >= blockKeep {
			delete(c.asked, name)
		}
	}
}
