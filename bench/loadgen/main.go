// Command loadgen opens many WebSocket connections and measures what they receive.
//
// It speaks three dialects: "clarion" (subprotocols clarion.v1 or clarion.batch.v1 plus
// bearer.<token>; event and batch frames), "plain" (one JSON event per frame, as a bare
// websockets.broadcast server sends) and "centrifugo" (Centrifugo's JSON protocol:
// connect with a token, subscribe to one channel, newline-separated pushes per frame).
//
// Every event's data carries {"seq":N,"key":K,"t":MICROS}: seq counts per key from 1,
// t is the producer's wall clock at send. Latency is receive time minus t (minus the
// Kafka timestamp kafkaTs when -latency-from=kafkaTs). Sequence integrity is checked
// per connection and key: a jump forward is a gap, a repeat or step back a duplicate.
//
// Control is line-based on stdin: "mark LABEL" prints one JSON line with the stats
// since the previous mark and resets them; "peek" prints them without resetting; "quit"
// prints a last line and exits. Per-key counts ("keys") are cumulative from the start. The
// first line printed is {"ready":...} once every connection is up (or has failed).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

type options struct {
	urls          []string
	reconnectURL  string
	dialect       string
	batch         bool
	tokensFile    string
	conns         int
	sources       int
	concurrency   int
	origin        string
	channel       string
	connectWithin time.Duration
	jitter        time.Duration
	latencyFrom   string
}

// ---- latency histogram: log buckets of 2 % from 1 µs ---------------------------------

const buckets = 1200

var logStep = math.Log(1.02)

type histogram struct {
	counts [buckets]uint64
	n      uint64
	max    int64
}

func bucketOf(us int64) int {
	if us < 1 {
		return 0
	}
	b := int(math.Log(float64(us)) / logStep)
	if b >= buckets {
		return buckets - 1
	}
	return b
}

func (h *histogram) add(us int64) {
	h.counts[bucketOf(us)]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *histogram) quantileMs(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	want := uint64(math.Ceil(q * float64(h.n)))
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= want {
			return math.Exp(float64(i+1)*logStep) / 1000
		}
	}
	return float64(h.max) / 1000
}

// ---- per-connection state -----------------------------------------------------------

type keyState struct {
	last      int64
	delivered int64
}

type connStats struct {
	mu         sync.Mutex
	hist       histogram
	events     int64
	frames     int64
	bytes      int64
	gaps       int64
	missing    int64
	dups       int64
	resets     int64
	keys       map[string]*keyState
	lastID     string
	connected  bool
	resumedAt  time.Time // first welcome after a reconnect
	firstAfter time.Time // first event after a reconnect
	reconnects int
	closes     map[int]int64
}

type client struct {
	index int
	token string
	stats connStats
}

type loadgen struct {
	opt       options
	clients   []*client
	dialers   []*websocket.Dialer
	markStart time.Time
	ruStart   syscall.Rusage
	killedAt  atomic.Int64 // unix nanos of the first disconnect seen (reconnect storms)
	dialFails atomic.Int64
	up        atomic.Int64
}

func main() {
	var opt options
	var urls string
	flag.StringVar(&urls, "url", "", "WebSocket URL(s), comma-separated, used round-robin")
	flag.StringVar(&opt.reconnectURL, "reconnect-url", "", "on close, reconnect here with lastId (clarion)")
	flag.StringVar(&opt.dialect, "dialect", "clarion", "clarion, plain or centrifugo")
	flag.BoolVar(&opt.batch, "batch", false, "offer the clarion.batch.v1 subprotocol")
	flag.StringVar(&opt.tokensFile, "tokens", "", "file with one token per line (connection i uses line i mod n)")
	flag.IntVar(&opt.conns, "conns", 1000, "connections")
	flag.IntVar(&opt.sources, "sources", 8, "source addresses 127.0.0.2 .. 127.0.0.(1+n)")
	flag.IntVar(&opt.concurrency, "concurrency", 64, "handshakes in flight")
	flag.StringVar(&opt.origin, "origin", "https://app.unionflow.test", "Origin header")
	flag.StringVar(&opt.channel, "channel", "bcast", "centrifugo channel to subscribe")
	flag.DurationVar(&opt.connectWithin, "connect-within", 120*time.Second, "give up connecting after")
	flag.DurationVar(&opt.jitter, "reconnect-jitter", time.Second, "reconnect after a uniform delay up to this")
	flag.StringVar(&opt.latencyFrom, "latency-from", "t", "t (producer µs in data) or kafkaTs")
	flag.Parse()
	opt.urls = strings.Split(urls, ",")
	raiseNofile()

	tokens := readTokens(opt.tokensFile)
	g := &loadgen{opt: opt}
	for i := 0; i < opt.sources; i++ {
		addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}
		d := &net.Dialer{LocalAddr: addr, Timeout: 30 * time.Second}
		g.dialers = append(g.dialers, &websocket.Dialer{
			NetDialContext:   d.DialContext,
			HandshakeTimeout: 60 * time.Second,
			ReadBufferSize:   4096,
			WriteBufferSize:  512,
		})
	}
	for i := 0; i < opt.conns; i++ {
		c := &client{index: i}
		if len(tokens) > 0 {
			c.token = tokens[i%len(tokens)]
		}
		c.stats.keys = map[string]*keyState{}
		c.stats.closes = map[int]int64{}
		g.clients = append(g.clients, c)
	}
	started := time.Now()
	g.connectAll()
	g.reset()
	emit(map[string]any{
		"ready":      true,
		"connected":  g.up.Load(),
		"failed":     int64(opt.conns) - g.up.Load(),
		"dial_fails": g.dialFails.Load(),
		"seconds":    time.Since(started).Seconds(),
	})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		switch {
		case strings.HasPrefix(line, "mark"):
			emit(g.snapshot(strings.TrimSpace(strings.TrimPrefix(line, "mark")), true))
		case line == "peek":
			emit(g.snapshot("peek", false))
		case line == "quit":
			emit(g.snapshot("final", true))
			return
		}
	}
	emit(g.snapshot("eof", true))
}

func emit(v any) {
	out, _ := json.Marshal(v)
	os.Stdout.Write(append(out, '\n'))
}

func raiseNofile() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func readTokens(path string) []string {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tokens:", err)
		os.Exit(2)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

func (g *loadgen) connectAll() {
	sem := make(chan struct{}, g.opt.concurrency)
	var wg sync.WaitGroup
	deadline := time.Now().Add(g.opt.connectWithin)
	for _, c := range g.clients {
		sem <- struct{}{}
		wg.Add(1)
		go func(c *client) {
			defer wg.Done()
			conn := g.dialRetry(c, g.opt.urls[c.index%len(g.opt.urls)], "", deadline, 50*time.Millisecond)
			<-sem
			if conn != nil {
				g.up.Add(1)
				go g.serve(c, conn)
			}
		}(c)
	}
	wg.Wait()
}

// dialRetry dials until it succeeds or the deadline passes. Backoff starts at first and
// doubles, capped; full jitter when first >= 1 s (the reference client's reconnect policy).
func (g *loadgen) dialRetry(c *client, base, lastID string, deadline time.Time, first time.Duration) *websocket.Conn {
	delay := first
	for attempt := 0; ; attempt++ {
		conn, err := g.dial(c, base, lastID, attempt)
		if err == nil {
			return conn
		}
		if g.dialFails.Add(1) <= 10 {
			fmt.Fprintln(os.Stderr, "dial:", err)
		}
		if time.Now().Add(delay).After(deadline) {
			fmt.Fprintln(os.Stderr, "dial failed for good:", err)
			return nil
		}
		if first >= time.Second {
			time.Sleep(time.Duration(rand.Int63n(int64(delay))))
			delay = min(delay*2, 60*time.Second)
		} else {
			time.Sleep(delay + time.Duration(rand.Int63n(int64(delay))))
			delay = min(delay*2, 2*time.Second)
		}
	}
}

func (g *loadgen) dial(c *client, base, lastID string, attempt int) (*websocket.Conn, error) {
	dialer := g.dialers[(c.index+attempt)%len(g.dialers)]
	header := http.Header{}
	if g.opt.origin != "" {
		header.Set("Origin", g.opt.origin)
	}
	target := base
	switch g.opt.dialect {
	case "clarion":
		proto := "clarion.v1"
		if g.opt.batch {
			proto = "clarion.batch.v1"
		}
		d := *dialer
		d.Subprotocols = []string{proto, "bearer." + c.token}
		dialer = &d
		if lastID != "" {
			u, _ := url.Parse(base)
			q := u.Query()
			q.Set("lastId", lastID)
			u.RawQuery = q.Encode()
			target = u.String()
		}
	}
	conn, resp, err := dialer.Dial(target, header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	if g.opt.dialect == "centrifugo" {
		connect := fmt.Sprintf(`{"id":1,"connect":{"token":%q,"name":"loadgen"}}`+"\n"+
			`{"id":2,"subscribe":{"channel":%q}}`, c.token, g.opt.channel)
		if err := conn.WriteMessage(websocket.TextMessage, []byte(connect)); err != nil {
			conn.Close()
			return nil, err
		}
		// Wait for both replies before counting the connection as up.
		got := 0
		for got < 2 {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				conn.Close()
				return nil, err
			}
			if bytes.Contains(msg, []byte(`"error"`)) {
				conn.Close()
				return nil, fmt.Errorf("centrifugo: %s", msg)
			}
			got += bytes.Count(msg, []byte(`"id":`))
		}
	}
	c.stats.mu.Lock()
	c.stats.connected = true
	c.stats.mu.Unlock()
	return conn, nil
}

var gapLog atomic.Int64

var (
	seqTag     = []byte(`"seq":`)
	keyTag     = []byte(`"key":"`)
	tTag       = []byte(`"t":`)
	kafkaTsTag = []byte(`"kafkaTs":`)
	idTag      = []byte(`{"type":"event","id":"`)
	welcomeTag = []byte(`{"type":"welcome"`)
	resetTag   = []byte(`{"type":"reset"`)
	pingFrame  = []byte(`{}`)
)

func (g *loadgen) serve(c *client, conn *websocket.Conn) {
	for {
		code := g.read(c, conn)
		conn.Close()
		c.stats.mu.Lock()
		c.stats.connected = false
		c.stats.closes[code]++
		lastID := c.stats.lastID
		c.stats.mu.Unlock()
		if g.opt.reconnectURL == "" {
			return
		}
		g.killedAt.CompareAndSwap(0, time.Now().UnixNano())
		if g.opt.jitter > 0 {
			time.Sleep(time.Duration(rand.Int63n(int64(g.opt.jitter))))
		}
		next := g.dialRetry(c, g.opt.reconnectURL, lastID, time.Now().Add(g.opt.connectWithin), 2*time.Second)
		if next == nil {
			return
		}
		c.stats.mu.Lock()
		c.stats.reconnects++
		c.stats.resumedAt = time.Time{}
		c.stats.firstAfter = time.Time{}
		c.stats.mu.Unlock()
		conn = next
	}
}

// read consumes frames until the connection ends; returns the close code (1006: none).
func (g *loadgen) read(c *client, conn *websocket.Conn) int {
	buf := make([]byte, 0, 4096)
	for {
		kind, r, err := conn.NextReader()
		if err != nil {
			if ce, ok := err.(*websocket.CloseError); ok {
				return ce.Code
			}
			return 1006
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err != nil {
				break
			}
		}
		if kind != websocket.TextMessage {
			continue
		}
		now := time.Now()
		g.frame(c, conn, buf, now)
	}
}

func (g *loadgen) frame(c *client, conn *websocket.Conn, msg []byte, now time.Time) {
	nowUs := now.UnixMicro()
	s := &c.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames++
	s.bytes += int64(len(msg))
	if g.opt.dialect == "centrifugo" && hasPing(msg) {
		// Centrifugo's application ping (an empty reply, alone or among pushes in one
		// newline-separated frame): answer with an empty command, or it closes with 3012.
		_ = conn.WriteMessage(websocket.TextMessage, pingFrame)
	}
	if bytes.HasPrefix(msg, resetTag) {
		s.resets++
	}
	if bytes.HasPrefix(msg, welcomeTag) && s.reconnects > 0 && s.resumedAt.IsZero() {
		s.resumedAt = now
	}
	if g.opt.dialect == "clarion" {
		if at := bytes.LastIndex(msg, idTag); at >= 0 {
			start := at + len(idTag)
			if end := bytes.IndexByte(msg[start:], '"'); end > 0 {
				s.lastID = string(msg[start : start+end])
			}
		}
	}
	rest := msg
	for {
		at := bytes.Index(rest, seqTag)
		if at < 0 {
			return
		}
		rest = rest[at+len(seqTag):]
		seq, n := parseInt(rest)
		rest = rest[n:]
		key := "all"
		if k := bytes.Index(rest, keyTag); k >= 0 && k < 8 {
			ks := rest[k+len(keyTag):]
			if e := bytes.IndexByte(ks, '"'); e >= 0 {
				key = string(ks[:e])
				rest = ks[e:]
			}
		}
		var sent int64
		if g.opt.latencyFrom == "kafkaTs" {
			if k := bytes.Index(rest, kafkaTsTag); k >= 0 {
				ms, _ := parseInt(rest[k+len(kafkaTsTag):])
				sent = ms * 1000
			}
		} else if k := bytes.Index(rest, tTag); k >= 0 && k < 8 {
			sent, _ = parseInt(rest[k+len(tTag):])
		}
		if sent > 0 {
			s.hist.add(nowUs - sent)
		}
		s.events++
		if s.reconnects > 0 && s.firstAfter.IsZero() {
			s.firstAfter = now
		}
		ks := s.keys[key]
		if ks == nil {
			ks = &keyState{}
			s.keys[key] = ks
		}
		switch {
		case seq == ks.last+1:
			ks.last = seq
			ks.delivered++
		case seq > ks.last+1:
			if gapLog.Add(1) <= 20 {
				fmt.Fprintf(os.Stderr, "gap: conn %d key %s after %d got %d (reconnects %d)\n",
					c.index, key, ks.last, seq, s.reconnects)
			}
			s.gaps++
			s.missing += seq - ks.last - 1
			ks.last = seq
			ks.delivered++
		default:
			s.dups++
		}
	}
}

func hasPing(msg []byte) bool {
	return bytes.Equal(msg, pingFrame) || bytes.HasPrefix(msg, []byte("{}\n")) ||
		bytes.HasSuffix(msg, []byte("\n{}")) || bytes.Contains(msg, []byte("\n{}\n"))
}

func parseInt(b []byte) (int64, int) {
	var v int64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + int64(b[i]-'0')
		i++
	}
	return v, i
}

func (g *loadgen) reset() {
	for _, c := range g.clients {
		s := &c.stats
		s.mu.Lock()
		s.hist = histogram{}
		s.events, s.frames, s.bytes, s.gaps, s.missing, s.dups = 0, 0, 0, 0, 0, 0
		s.mu.Unlock()
	}
	g.markStart = time.Now()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &g.ruStart)
}

func cpuSeconds(ru *syscall.Rusage) float64 {
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func (g *loadgen) snapshot(label string, reset bool) map[string]any {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	elapsed := time.Since(g.markStart).Seconds()
	var h histogram
	var events, frames, nbytes, gaps, missing, dups, resets int64
	connected, reconnected, resumed, gotAfter := 0, 0, 0, 0
	var lastResumed, lastFirstAfter time.Time
	var resumedAts []time.Time
	keys := map[string]map[string]int64{}
	closes := map[string]int64{}
	for _, c := range g.clients {
		s := &c.stats
		s.mu.Lock()
		h.merge(&s.hist)
		events += s.events
		frames += s.frames
		nbytes += s.bytes
		gaps += s.gaps
		missing += s.missing
		dups += s.dups
		resets += s.resets
		if s.connected {
			connected++
		}
		if s.reconnects > 0 {
			reconnected++
			if !s.resumedAt.IsZero() {
				resumed++
				resumedAts = append(resumedAts, s.resumedAt)
				if s.resumedAt.After(lastResumed) {
					lastResumed = s.resumedAt
				}
			}
			if !s.firstAfter.IsZero() {
				gotAfter++
				if s.firstAfter.After(lastFirstAfter) {
					lastFirstAfter = s.firstAfter
				}
			}
		}
		for code, n := range s.closes {
			closes[strconv.Itoa(code)] += n
		}
		for key, ks := range s.keys {
			agg := keys[key]
			if agg == nil {
				agg = map[string]int64{}
				keys[key] = agg
			}
			agg["connections"]++
			agg["delivered"] += ks.delivered
			agg["last_min"] = minNonZero(agg["last_min"], ks.last)
			agg["last_max"] = max(agg["last_max"], ks.last)
		}
		s.mu.Unlock()
	}
	out := map[string]any{
		"label":            label,
		"seconds":          elapsed,
		"events":           events,
		"frames":           frames,
		"bytes":            nbytes,
		"deliveries_per_s": float64(events) / elapsed,
		"frames_per_s":     float64(frames) / elapsed,
		"latency_ms": map[string]float64{
			"p50": h.quantileMs(0.50), "p95": h.quantileMs(0.95), "p99": h.quantileMs(0.99),
			"max": float64(h.max) / 1000,
		},
		"latency_samples": h.n,
		"gaps":            gaps,
		"missing":         missing,
		"duplicates":      dups,
		"resets":          resets,
		"connected":       connected,
		"closes":          closes,
		"dial_fails":      g.dialFails.Load(),
		"cpu_seconds":     cpuSeconds(&ru) - cpuSeconds(&g.ruStart),
		"cpu_percent":     100 * (cpuSeconds(&ru) - cpuSeconds(&g.ruStart)) / elapsed,
		"keys":            keys,
	}
	if killed := g.killedAt.Load(); killed != 0 {
		storm := map[string]any{"reconnected": reconnected, "resumed": resumed, "event_after": gotAfter}
		if !lastResumed.IsZero() {
			storm["all_welcomed_s"] = lastResumed.Sub(time.Unix(0, killed)).Seconds()
		}
		if len(resumedAts) > 0 {
			// How long clients took to be welcomed back, from the kill: the storm's shape.
			waits := make([]float64, len(resumedAts))
			for i, at := range resumedAts {
				waits[i] = at.Sub(time.Unix(0, killed)).Seconds()
			}
			sort.Float64s(waits)
			pick := func(q float64) float64 { return waits[int(q*float64(len(waits)-1))] }
			storm["welcomed_s"] = map[string]float64{
				"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": waits[len(waits)-1],
			}
		}
		if !lastFirstAfter.IsZero() {
			storm["all_event_after_s"] = lastFirstAfter.Sub(time.Unix(0, killed)).Seconds()
		}
		out["storm"] = storm
	}
	if reset {
		g.reset()
	}
	return out
}

func minNonZero(a, b int64) int64 {
	if a == 0 {
		return b
	}
	return min(a, b)
}
