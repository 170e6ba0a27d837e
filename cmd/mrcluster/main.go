// Command mrcluster is a map-reduce job cluster: `mrcluster serve` runs a
// server with an embedded NATS JetStream and workers; the other commands
// are a client of its HTTP API. Run "mrcluster help".
package main

import "github.com/mrcluster/mrcluster/internal/cli"

func main() { cli.Main() }
