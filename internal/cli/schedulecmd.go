package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mrcluster/mrcluster/client"
)

// scheduleCmd runs "mrcluster schedule add|ls|show|pause|resume|rm": cron
// schedules, each submitting a job at every tick.
func scheduleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = `usage: mrcluster schedule add NAME --cron EXPR KIND [N] [job flags] | ls | show NAME | pause NAME | resume NAME | rm NAME   [--server URL] [--token T] [-o json]
  add NAME --cron EXPR KIND N  submit a job of KIND at every tick of EXPR: five fields (minute hour
                               day-of-month month day-of-week, "*/5 * * * *"), six with seconds first,
                               or "@hourly", "@every 10m"; with --timezone, --missed, --overlap, and submit's job flags
  ls                           list the schedules with their next tick and last job
  show NAME                    one schedule and the jobs of its last ticks
  pause NAME, resume NAME      stop firing; start again from the next tick (the ticks between are not fired)
  rm NAME                      delete a schedule (the jobs it made stay)`
	sub, args, err := subcommand("schedule", "add, ls, show, pause, resume or rm", use, args, stdout, stderr)
	if sub == "" {
		return err
	}
	fs, server := clientFlags("schedule "+sub, stderr)
	var cron, timezone, missed, overlap *string
	var sf *specFlags
	if sub == "add" {
		cron = fs.String("cron", "", "the cron expression, e.g. \"0 3 * * *\" (required)")
		timezone = fs.String("timezone", "", "the IANA time zone of the expression, e.g. Europe/Paris (default UTC)")
		missed = fs.String("missed", "skip", "ticks missed while no server ran: skip, or run_once (one job for the newest)")
		overlap = fs.String("overlap", "allow", "a tick while the last tick's job has not finished: allow (fire all the same), or skip (no job for it)")
		sf = newSpecFlags(fs)
	}
	fs.Usage = func() { fmt.Fprintln(stderr, use); fs.PrintDefaults() }
	pos, asJSON, err := parseClient(fs, server, args)
	if err != nil {
		return err
	}
	c := newClient(server)
	show := func(s client.Schedule, err error) error {
		if err != nil {
			return explain(err)
		}
		if asJSON {
			return printJSON(stdout, s)
		}
		return showSchedule(stdout, s)
	}
	name := func() (string, error) {
		if len(pos) != 1 {
			fs.Usage()
			return "", fmt.Errorf("schedule %s needs one schedule name", sub)
		}
		return pos[0], nil
	}
	switch sub {
	case "add":
		if len(pos) == 0 {
			fs.Usage()
			return fmt.Errorf("schedule add needs a name, then the job's kind: mrcluster schedule add NAME --cron EXPR KIND N")
		}
		if *cron == "" {
			return fmt.Errorf("schedule add needs --cron, e.g. --cron \"*/5 * * * *\"")
		}
		spec, err := sf.spec("schedule add "+pos[0], pos[1:], fs.Usage)
		if err != nil {
			return err
		}
		return show(c.AddSchedule(ctx, client.NewSchedule{Name: pos[0], Cron: *cron, Timezone: *timezone, Missed: *missed, Overlap: *overlap, Job: spec}))
	case "ls":
		list, err := c.Schedules(ctx)
		if err != nil {
			return explain(err)
		}
		if asJSON {
			return printJSON(stdout, map[string]any{"schedules": list})
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SCHEDULE\tCRON\tTIMEZONE\tJOB\tNEXT\tFIRED\tLAST JOB")
		for _, s := range list {
			next, last := "paused", "-"
			if s.Next != nil {
				next = s.Next.Local().Format("2006-01-02 15:04:05")
			}
			if len(s.Jobs) > 0 {
				last = s.Jobs[0].Job
			}
			if s.LastError != "" {
				last = "error: " + s.LastError
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%d\t%s\n", s.Name, s.Cron, s.Timezone, s.Job.Kind, partitionsOf(s.Job), next, s.Fired, last)
		}
		return tw.Flush()
	case "show":
		n, err := name()
		if err != nil {
			return err
		}
		return show(c.Schedule(ctx, n))
	case "pause", "resume":
		n, err := name()
		if err != nil {
			return err
		}
		if sub == "pause" {
			return show(c.PauseSchedule(ctx, n))
		}
		return show(c.ResumeSchedule(ctx, n))
	case "rm":
		n, err := name()
		if err != nil {
			return err
		}
		return explain(c.DeleteSchedule(ctx, n))
	}
	fmt.Fprintln(stderr, use)
	return fmt.Errorf("unknown schedule subcommand %q: use add, ls, show, pause, resume or rm", sub)
}

// partitionsOf says a scheduled job's partition count: "auto" for a data
// job that leaves it to the cluster at each tick.
func partitionsOf(spec client.Spec) string {
	if spec.Partitions == 0 {
		return "auto"
	}
	return strconv.Itoa(spec.Partitions)
}

// showSchedule prints a schedule for a person.
func showSchedule(w io.Writer, s client.Schedule) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "schedule\t%s\n", s.Name)
	fmt.Fprintf(tw, "cron\t%s (%s)\n", s.Cron, s.Timezone)
	job := fmt.Sprintf("%s, %s partitions", s.Job.Kind, partitionsOf(s.Job))
	if len(s.Job.Input) > 0 {
		job += ", input " + strings.Join(s.Job.Input, ",")
	}
	fmt.Fprintf(tw, "job\t%s\n", job)
	switch {
	case s.Paused:
		fmt.Fprintf(tw, "next\tpaused (mrcluster schedule resume %s)\n", s.Name)
	case s.Next != nil:
		fmt.Fprintf(tw, "next\t%s (in %s)\n", s.Next.Local().Format(time.DateTime), time.Until(*s.Next).Round(time.Second))
	}
	fmt.Fprintf(tw, "missed ticks\t%s\n", s.Missed)
	fmt.Fprintf(tw, "overlap\t%s\n", s.Overlap)
	fmt.Fprintf(tw, "fired\t%d jobs", s.Fired)
	if s.Skipped > 0 {
		fmt.Fprintf(tw, ", %d ticks skipped", s.Skipped)
	}
	fmt.Fprintln(tw)
	if s.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", s.LastError)
	}
	for _, j := range s.Jobs {
		fmt.Fprintf(tw, "  %s\t%s\n", j.Tick.Local().Format(time.DateTime), j.Job)
	}
	return tw.Flush()
}
