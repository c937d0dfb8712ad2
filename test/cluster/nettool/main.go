// Command nettool is the workload of the prismnet multi-host tests: run
// inside a workload's network namespace, it serves TCP echo, probes a
// TCP port, or keeps an echo stream going and reports every gap, so a test
// can prove what a security group lets through and that a stream survives
// an agent restart.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nettool serve|probe|stream|get [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", ":8080", "serve: address to listen on")
	to := fs.String("to", "", "probe, stream: address to connect to; get: URL")
	timeout := fs.Duration("timeout", 2*time.Second, "probe: connect and answer timeout; stream: longest wait for an echo")
	interval := fs.Duration("interval", 20*time.Millisecond, "stream: time between messages")
	duration := fs.Duration("duration", time.Minute, "stream: how long to run")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(*listen)
	case "probe":
		err = probe(*to, *timeout)
	case "stream":
		err = stream(*to, *interval, *duration, *timeout)
	case "get":
		err = get(*to, *timeout)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nettool:", err)
		os.Exit(1)
	}
}

// serve echoes every connection until killed.
func serve(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening", l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// probe connects and checks one echo.
func probe(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("probe\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "probe\n" {
		return fmt.Errorf("no echo: %q %v", line, err)
	}
	fmt.Println("ok")
	return nil
}

// stream sends numbered lines and checks each comes back in order within
// timeout, printing a progress line every second and "done N" at the end.
func stream(addr string, interval, duration, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	end := time.Now().Add(duration)
	last := time.Now()
	n := 0
	for time.Now().Before(end) {
		_ = c.SetDeadline(time.Now().Add(timeout))
		msg := strconv.Itoa(n) + "\n"
		if _, err := c.Write([]byte(msg)); err != nil {
			return fmt.Errorf("after %d echoes: %w", n, err)
		}
		line, err := r.ReadString('\n')
		if err != nil || line != msg {
			return fmt.Errorf("after %d echoes: got %q: %v", n, line, err)
		}
		n++
		if time.Since(last) >= time.Second {
			fmt.Println("ok", n)
			last = time.Now()
		}
		time.Sleep(interval)
	}
	fmt.Println("done", n)
	return nil
}

// get fetches a URL and prints the status line and the body.
func get(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	fmt.Println(resp.Status)
	fmt.Println(string(body))
	return err
}
