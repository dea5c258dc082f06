package rpc

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/emberhq/ember/internal/wire"
)

// Item is one unit of work for a lane: a frame from a connection, or an
// event function (membership changes) ordered with the frames: in push
// order on a lane of one worker, and on a lane of several, among the items
// of its Member (an event without one runs as soon as a worker takes it).
type Item struct {
	Conn  *Conn
	Frame *wire.Frame // nil once Predecode has decoded it: see Head
	Event func()
	// Member is, for an event, the connection of the executor it is
	// about. In a lane of several workers the event runs after that
	// connection's items taken before it and before those taken after
	// it; other connections' items are not held up.
	Member *Conn
	// AfterStart makes an event, in a lane of several workers, wait for
	// its Member's items taken before it to have started, not returned:
	// it runs alongside those still running (a long poll, say). Those
	// taken after it still wait for it to return.
	AfterStart bool

	// Decoded says Msg and Err hold the frame's message, decoded before
	// the item was queued (see Predecode), and Head what the lane still
	// needs of the frame.
	Decoded bool
	Head    Head
	Msg     any
	Err     error

	// Credit is what a SEND counts against its sender's window (see
	// Conn.Consumed); the lane gives it back once the item has run, or
	// earlier while it lends to the item's connection (see Lend), and
	// then keeps it negated, to count it off the loan when the item has
	// run. Zero for anything else.
	Credit int64

	// handler is an ASK's handler ctx, made as the reader took the ASK
	// when it carries a deadline or is cancelable (see Deliver and
	// handlerCtx); nil for anything else.
	handler *handlerCtx
}

// Head is what dispatching a message needs of its frame besides the
// payload.
type Head struct {
	Kind          wire.Kind
	Call          uint64
	Plugin        uint32
	Type          string
	TimeoutMicros int64
}

// member is the connection whose items it keeps its place among, in a
// lane of several workers: its Member for an event, its Conn otherwise.
func (it *Item) member() *Conn {
	if it.Event != nil {
		return it.Member
	}
	return it.Conn
}

// Header returns the item's Head: Frame's when the item still has it.
func (it *Item) Header() Head {
	if f := it.Frame; f != nil {
		return Head{Kind: f.Kind, Call: f.Call, Plugin: f.Plugin, Type: f.Type, TimeoutMicros: f.TimeoutMicros}
	}
	return it.Head
}

// predecodeMax is the largest payload decoded on the connection's reader;
// larger ones are decoded on the lane so that one huge message cannot
// stall the stream.
const predecodeMax = 64 << 10

// Predecode decodes it's message now, on the calling goroutine (a
// connection's reader), when it is small: decoding then overlaps with the
// lane's handler instead of adding to it. It then keeps what the lane
// needs of the frame in Head and drops Frame from the item, so that the
// reader, which took the frame from wire's pool, can give it back (see
// Deliver) and the lane need not touch it.
func Predecode(it *Item) {
	if it.Frame != nil && len(it.Frame.Payload) <= predecodeMax {
		it.Msg, it.Err = Decode(it.Frame)
		it.Decoded = true
		it.Head = it.Header()
		it.Frame = nil
	}
}

// MaxLaneWorkers bounds a lane's workers (plugin.ConcurrentReceiver). A
// lane starts them as its items need them, and each then lives as long as
// the lane: a plugin asking for millions, and sent that many messages that
// wait, would have its process start them all.
const MaxLaneWorkers = 1 << 16

// laneWorkers is the workers of a lane asked for n: at least one, at most
// MaxLaneWorkers.
func laneWorkers(n int) int { return min(max(n, 1), MaxLaneWorkers) }

// Lane runs one plugin's work in order on its own goroutine(s), so that a
// slow plugin delays nobody else. With one worker (the default) items run
// one at a time in push order. A lane of several workers starts them as
// they are needed: an item pushed while every worker started is busy
// starts another, up to the lane's maximum, and a worker, once started,
// waits for more work until the lane is closed.
//
// Push never blocks. Backpressure works through the senders' windows
// instead (see Conn.Send): an item that carries Credit gives it back to
// its connection once it has run, except that once the lane holds its
// limit of items (queued or running) it keeps those credits until it is
// down to half the limit. Senders to a lane that falls behind thus wait
// in Send, while the streams they share with other plugins keep flowing.
// While one of its handlers waits in Send for its window on a connection,
// the lane gives that connection's credits back at once instead (Lend): a
// lane whose handler waits on its peer must not be what its peer waits
// for.
type Lane struct {
	run   func(Item)
	limit int

	mu       sync.Mutex // protects the following fields
	q        []Item
	head     int
	pushed   uint64            // items ever pushed; item k has sequence k
	taken    uint64            // items ever handed to a worker
	running  map[uint64]credit // several workers: the items taken and not yet finished, by sequence, with their credits
	serial   bool              // one worker: it takes batches, items finish in order
	active   atomic.Int64      // serial: items taken and not yet finished
	finished atomic.Uint64     // items finished (several workers: written under mu)
	flushing atomic.Int32      // Flush calls waiting (written under mu; serial workers read it without)
	progress chan struct{}     // closed and replaced when an item finishes and Flush waits
	// full: the items queued or running reached the limit and have not
	// yet drained to half of it; the credits of items run meanwhile wait
	// in owed. Written under mu; workers may look without it.
	full   atomic.Bool
	owed   map[creditKey]int64
	closed bool
	// slots hold the credits of the serial worker's batch, slot i for
	// its item i: its key is written under mu as the batch is taken, its
	// credit taken with an atomic swap by the worker once the item has
	// run, or by Lend (under mu) before.
	slots []slot
	// loans holds what the lane lends each connection, while it lends
	// or items it lent have yet to run (see Lend).
	loans map[*Conn]*loan
	// repliedToSends holds the message types whose handler has replied
	// to a SEND (see Dispatch, which says so once per type).
	repliedToSends sync.Map
	// sentWarnings bounds the warnings about sent messages the lane
	// could not run (see Dispatch).
	sentWarnings LogBudget
	// In a lane of several workers (see admitLocked): members are the
	// connections with items running, held or an event waiting or
	// running; ready are held items free to run, taken before the queue.
	members map[*Conn]*member
	ready   []taken
	// In a lane of several workers: max is the most it may start, workers
	// how many it has, idle those waiting for an item, and starting those
	// started that have yet to look for one.
	max, workers, idle, starting int
	wake                         *sync.Cond
	wg                           sync.WaitGroup
}

// taken is an item a worker has taken, with its sequence number.
type taken struct {
	it  Item
	seq uint64
}

// member is what a lane of several workers tracks of one connection.
type member struct {
	running int     // its messages running
	event   *taken  // an event about it, waiting for those to return
	inEvent bool    // an event about it is running
	held    []taken // its items taken while an event waited or ran
}

// creditKey names the window a kept credit belongs to.
type creditKey struct {
	c *Conn
	p uint32
}

type laneKey struct{}

// WithLane returns ctx marked as the ctx of l's handlers: give it (or a
// ctx made from it) to every handler l runs. A Send under it that waits
// for its window has l lend to that connection meanwhile (see Lend).
func WithLane(ctx context.Context, l *Lane) context.Context {
	return context.WithValue(ctx, laneKey{}, l)
}

// laneOf returns the lane whose handler ctx ctx is, or nil.
func laneOf(ctx context.Context) *Lane {
	l, _ := ctx.Value(laneKey{}).(*Lane)
	return l
}

// firstReplyToSend reports whether typ's handler replying to a SEND is
// news: the first time for typ on this lane.
func (l *Lane) firstReplyToSend(typ string) bool {
	_, seen := l.repliedToSends.LoadOrStore(typ, true)
	return !seen
}

// credit is an item's credit and the window it belongs to.
type credit struct {
	key creditKey
	n   int64
}

// creditOf returns it's credit.
func creditOf(it *Item) credit {
	if it.Credit == 0 {
		return credit{}
	}
	return credit{creditKey{it.Conn, it.Header().Plugin}, it.Credit}
}

// loan is what a lane lends one connection.
type loan struct {
	lenders int   // Lend calls not yet stopped
	out     int64 // bytes lent of items yet to run; at most Conn.LoanCap
	// ran is what was lent of items that had run, their credits kept
	// while the lane was full: released once it has drained (keep).
	ran []credit
}

// done reports whether ln holds nothing more: nobody lends, and every
// byte lent has been released.
func (ln *loan) done() bool { return ln.lenders == 0 && ln.out <= 0 && len(ln.ran) == 0 }

// slot is one item's credit in the serial worker's batch.
type slot struct {
	key creditKey
	n   atomic.Int64
}

// DefaultLaneLimit is the default number of items queued or running at
// which a lane starts keeping its senders' credits.
const DefaultLaneLimit = 1 << 16

// NewLane returns a lane of up to workers goroutines (at least one, at most
// MaxLaneWorkers) calling run for every pushed item. One worker starts at
// once; with more, they start as items need them. The lane keeps its
// senders' credits from when limit items are queued or running until half
// as many are (limit <= 0: DefaultLaneLimit).
func NewLane(workers, limit int, run func(Item)) *Lane {
	workers = laneWorkers(workers)
	if limit <= 0 {
		limit = DefaultLaneLimit
	}
	l := &Lane{run: run, limit: limit, running: map[uint64]credit{}, progress: make(chan struct{})}
	l.wake = sync.NewCond(&l.mu)
	l.serial = workers == 1
	if l.serial {
		l.wg.Add(1)
		go l.serialLoop(nil, 0)
		return l
	}
	l.max = workers
	return l
}

// spawnLocked starts workers, up to the lane's maximum, until every item
// free to run (queued, or held and now ready) has a worker that is idle or
// starting to take it: a worker busy with a long item must not be what a
// later item waits for while the lane may start another. l.mu is held.
func (l *Lane) spawnLocked() {
	for len(l.q)-l.head+len(l.ready) > l.idle+l.starting && l.workers < l.max {
		l.workers++
		l.starting++
		l.wg.Add(1)
		go l.loop(taken{}, false)
	}
}

// Push queues it. It reports false if the lane is closed.
func (l *Lane) Push(it Item) bool {
	ok, _ := l.push(it)
	return ok
}

// push is Push that also reports whether this item filled the lane: the
// items queued or running reached the limit, and the lane starts keeping
// credits.
func (l *Lane) push(it Item) (ok, filled bool) {
	l.mu.Lock()
	// An item from a connection that has ended is refused under the lane's
	// lock: its owner's HandleClose queues its events (OnExecutorRemoved)
	// after the connection ends, so none of that connection's messages can
	// follow them.
	if l.closed || (it.Conn != nil && it.Conn.ended.Load()) {
		l.mu.Unlock()
		return false, false
	}
	// it's credit, given back at once (see Lend). Its key is read here,
	// under l.mu: once it is queued and l.mu released, a worker may run
	// it and release its frame (one not predecoded), which Header reads.
	if it.Credit > 0 && len(l.loans) > 0 {
		if ln := l.loans[it.Conn]; ln != nil && ln.lenders > 0 {
			it.Credit = l.lendItemLocked(ln, creditOf(&it))
		}
	}
	l.pushed++
	l.q = append(l.q, it)
	if !l.serial {
		l.spawnLocked()
	}
	if !l.full.Load() && l.lenLocked() >= l.limit {
		l.full.Store(true)
		filled = true
	}
	l.mu.Unlock()
	l.wake.Signal()
	return true, filled
}

// lendItemLocked lends cr, the credit of an item yet to run, under ln
// if it leaves room for it (Conn.LoanCap), and returns what the item
// keeps: -cr.n when lent, cr.n when not. l.mu is held.
func (l *Lane) lendItemLocked(ln *loan, cr credit) int64 {
	if cr.n <= 0 || ln.out+cr.n > cr.key.c.LoanCap(cr.key.p) {
		return cr.n
	}
	ln.out += cr.n
	l.lendLocked(cr)
	return -cr.n
}

// lendLocked gives cr back as lent credit (Conn.Lent). l.mu is held: a
// lent CREDIT goes before the release of the same bytes, which is decided
// under it. l.mu comes before Conn.mu.
func (l *Lane) lendLocked(cr credit) {
	cr.key.c.Lent(cr.key.p, cr.n)
}

// Lend makes the lane give back at once the credits of c's SENDs it
// holds, queued, running or kept while full, and of those that arrive
// from c until stop is called (each Lend needs its own stop), instead of
// once they have run: as lent credit (Conn.Lent), which only the peer's
// handlers may spend. Conn.Send lends while one of the lane's handlers
// waits in it for its window on c (see WithLane): a Receive that sends to
// the side sending to it holds up its lane until the peer grants credit,
// and the peer's lane may be waiting on this end's window in the same
// way; without the loan each would wait for the other for ever. What the
// loan lets in is what the peer's handlers send for what they take in
// from this end, which this end's own window bounds (the peer's other
// goroutines still wait for credit this lane gives back as it runs their
// messages), so a full lane lends too; but never more than Conn.LoanCap
// of items yet to run per connection, against a peer that spends what it
// was lent on anything.
func (l *Lane) Lend(c *Conn) (stop func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.loans == nil {
		l.loans = map[*Conn]*loan{}
	}
	ln := l.loans[c]
	if ln == nil {
		ln = &loan{}
		l.loans[c] = ln
	}
	ln.lenders++
	// The items that have run first (kept while full: they hold nothing
	// any more), then the oldest, which will run first.
	for k, n := range l.owed {
		if k.c == c {
			delete(l.owed, k)
			l.lendLocked(credit{k, n})
			ln.ran = append(ln.ran, credit{k, n})
		}
	}
	for i := range l.slots {
		s := &l.slots[i]
		if s.key.c != c {
			continue
		}
		for v := s.n.Load(); v > 0 && ln.out+v <= c.LoanCap(s.key.p); v = s.n.Load() {
			if s.n.CompareAndSwap(v, -v) { // else the worker took it as it finished
				l.lendItemLocked(ln, credit{s.key, v})
				break
			}
		}
	}
	for seq, cr := range l.running {
		if cr.key.c == c && cr.n > 0 {
			cr.n = l.lendItemLocked(ln, cr)
			l.running[seq] = cr
		}
	}
	for i := l.head; i < len(l.q); i++ {
		if it := &l.q[i]; it.Conn == c && it.Credit > 0 {
			it.Credit = l.lendItemLocked(ln, creditOf(it))
		}
	}
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if ln.lenders--; ln.done() {
			delete(l.loans, c)
		}
	}
}

// finish is called after an item has run (and no longer counts in Len),
// with its credit (zero if it had none; negated if lent, when it counts it
// off its connection's loans): it gives the credit back, or while the lane
// is full keeps it, and hands back every credit kept once the lane has
// drained to half its limit.
func (l *Lane) finish(cr credit) {
	if cr.n < 0 {
		l.mu.Lock()
		ln := l.loans[cr.key.c] // kept while ln.out > 0
		// The item has run: what was lent for it is the peer's for any
		// Send from now on.
		cr.key.c.Release(cr.key.p, -cr.n)
		if ln.out += cr.n; ln.done() {
			delete(l.loans, cr.key.c)
		}
		l.mu.Unlock()
		cr.n = 0
	}
	if l.full.Load() && l.keep(cr) {
		return
	}
	if cr.n > 0 {
		cr.key.c.Consumed(cr.key.p, cr.n)
	}
}

// keep keeps an item's credit while the lane is full, and once the lane
// has drained to half its limit hands back every credit kept. It reports
// false, keeping nothing, if the lane is no longer full.
func (l *Lane) keep(cr credit) bool {
	l.mu.Lock()
	if !l.full.Load() {
		l.mu.Unlock()
		return false
	}
	if cr.n > 0 {
		if l.owed == nil {
			l.owed = map[creditKey]int64{}
		}
		l.owed[cr.key] += cr.n
	}
	var owed map[creditKey]int64
	if l.lenLocked() <= l.limit/2 {
		owed = l.owed
		l.owed = nil
		l.full.Store(false)
		l.releaseRanLocked()
	}
	l.mu.Unlock()
	grant(owed)
	return true
}

// releaseRanLocked releases what the lane lent of items that had run
// while it was full, now that it no longer is (see loan.ran). l.mu is
// held.
func (l *Lane) releaseRanLocked() {
	for c, ln := range l.loans {
		for _, cr := range ln.ran {
			cr.key.c.Release(cr.key.p, cr.n)
		}
		if ln.ran = nil; ln.done() {
			delete(l.loans, c)
		}
	}
}

// grant hands kept credits back to their connections.
func grant(owed map[creditKey]int64) {
	for k, n := range owed {
		k.c.Consumed(k.p, n)
	}
}

// Len returns the number of items queued or running.
func (l *Lane) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lenLocked()
}

// lenLocked is Len with l.mu held.
func (l *Lane) lenLocked() int {
	return len(l.q) - l.head + len(l.running) + int(l.active.Load())
}

// Flush waits until every item pushed before the call has finished, or ctx
// ends. Items pushed later do not hold it up.
func (l *Lane) Flush(ctx context.Context) error { return l.flush(ctx, l.doneThrough) }

// FlushStarted is Flush that, on a lane of several workers, waits only
// until every item pushed before the call has started: one that waits on
// its ctx (a job run in Receive until canceled) would hold Flush until
// its ctx ends, which the caller ends only after the flush. On a lane of
// one worker it is Flush.
func (l *Lane) FlushStarted(ctx context.Context) error {
	if l.serial {
		return l.Flush(ctx)
	}
	return l.flush(ctx, l.startedThrough)
}

// flush waits until through(the items pushed before the call) holds, or
// ctx ends.
func (l *Lane) flush(ctx context.Context, through func(n uint64) bool) error {
	l.mu.Lock()
	target := l.pushed
	for {
		// Announce the wait before checking, so that a serial worker that
		// finishes an item after the check sees it and wakes us.
		l.flushing.Add(1)
		if through(target) {
			l.flushing.Add(-1)
			l.mu.Unlock()
			return nil
		}
		progress := l.progress
		l.mu.Unlock()
		select {
		case <-progress:
		case <-ctx.Done():
			l.flushing.Add(-1)
			return ctx.Err()
		}
		l.mu.Lock()
		l.flushing.Add(-1)
	}
}

// startedThrough reports whether the items through the nth pushed have
// all started, on a lane of several workers: taken, and none of them held
// behind a membership event. l.mu is held.
func (l *Lane) startedThrough(n uint64) bool {
	if l.taken < n {
		return false
	}
	for _, t := range l.ready {
		if t.seq <= n {
			return false
		}
	}
	for _, m := range l.members {
		if m.event != nil && m.event.seq <= n {
			return false
		}
		for _, t := range m.held {
			if t.seq <= n {
				return false
			}
		}
	}
	return true
}

// doneThrough reports whether items 1..n have all finished. l.mu is held.
func (l *Lane) doneThrough(n uint64) bool {
	if l.serial {
		return l.finished.Load() >= n
	}
	if l.taken < n {
		return false
	}
	for seq := range l.running {
		if seq <= n {
			return false
		}
	}
	return true
}

// Close stops the workers after the queued items have run, and waits.
// Credits kept meanwhile go back to their connections.
func (l *Lane) Close() { _ = l.CloseWithin(context.Background()) }

// CloseWithin is Close that stops waiting when ctx ends, and then returns
// ctx's error: an item that does not return (a handler ignoring its ctx)
// is abandoned, and the lane finishes in the background once it does.
func (l *Lane) CloseWithin(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.wake.Broadcast()
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.wg.Wait()
		l.mu.Lock()
		owed := l.owed
		l.owed = nil
		l.full.Store(false)
		l.releaseRanLocked()
		l.mu.Unlock()
		grant(owed)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serialBatch bounds the items the single worker takes at once.
const serialBatch = 256

// serialLoop is the one worker of a serial lane. It takes every queued
// item (up to serialBatch) under one lock and runs them in order: one lock
// round per batch instead of per item, where the reader pushing and the
// worker taking would otherwise contend on every message. It starts with
// batch: what is left of the one a worker before it was running (see
// below), whose credits are in the slots from first on.
func (l *Lane) serialLoop(batch []Item, first int) {
	next := 0 // batch[next:] has yet to run
	returned := false
	defer func() {
		if returned {
			l.wg.Done()
			return
		}
		if r := recover(); r != nil {
			panic(r) // not a Goexit: the process ends, and nothing more runs
		}
		// An item's run ended this goroutine (runtime.Goexit, which
		// rpc.Call logs): a new worker runs the rest of the batch, and
		// the lane goes on.
		go l.serialLoop(batch[next:], first+next)
	}()
	for {
		for next < len(batch) {
			it := &batch[next]
			next++
			l.runSerial(it, &l.slots[first+next-1])
		}
		if !l.awaitItem() {
			returned = true
			return
		}
		n := min(len(l.q)-l.head, serialBatch)
		batch = append(batch[:0], l.q[l.head:l.head+n]...)
		next, first = 0, 0
		if cap(l.slots) < n {
			l.slots = make([]slot, n, serialBatch)
		}
		l.slots = l.slots[:n]
		for i := range batch {
			cr := creditOf(&batch[i])
			l.slots[i].key = cr.key
			l.slots[i].n.Store(cr.n)
		}
		l.active.Store(int64(n))
		l.takeLocked(n)
		l.mu.Unlock()
	}
}

// runSerial runs it, an item of the serial worker's batch whose credit is
// in s, and counts it finished, even if its run ends the goroutine.
func (l *Lane) runSerial(it *Item, s *slot) {
	defer func() {
		*it = Item{}
		l.active.Add(-1)
		l.finished.Add(1)
		l.finish(credit{s.key, s.n.Swap(0)})
		if l.flushing.Load() > 0 {
			l.mu.Lock()
			l.progressLocked()
			l.mu.Unlock()
		}
	}()
	l.run(*it)
}

// awaitItem locks l.mu and waits until an item is queued or the lane is
// closed; the serial worker calls it once its batch has run. It reports
// true with l.mu held when there is an item to take, false (unlocked)
// when the lane is closed and empty.
func (l *Lane) awaitItem() bool {
	l.mu.Lock()
	// The batch has run: let go of its connections.
	clear(l.slots)
	l.slots = l.slots[:0]
	for l.head == len(l.q) && !l.closed {
		l.wake.Wait()
	}
	if l.head == len(l.q) {
		l.mu.Unlock()
		return false
	}
	return true
}

// takeLocked removes the first n queued items (the caller has copied
// them). l.mu is held.
func (l *Lane) takeLocked(n int) {
	clear(l.q[l.head : l.head+n])
	l.head += n
	l.compactLocked()
	l.taken += uint64(n)
}

// progressLocked wakes Flush callers to look again. l.mu is held.
func (l *Lane) progressLocked() {
	close(l.progress)
	l.progress = make(chan struct{})
}

// compactLocked reclaims the queue's consumed prefix. l.mu is held.
func (l *Lane) compactLocked() {
	if l.head == len(l.q) {
		l.q, l.head = l.q[:0], 0
	} else if l.head > 1024 && l.head*2 > len(l.q) {
		n := copy(l.q, l.q[l.head:])
		clear(l.q[n:])
		l.q, l.head = l.q[:n], 0
	}
}

// loop is a worker of a lane of several workers. It starts with t when ok:
// an event due to run on the worker this one replaces (see below);
// otherwise it was counted as starting (spawnLocked), and takes the next
// item free to run.
func (l *Lane) loop(t taken, ok bool) {
	running := false // t is running
	defer func() {
		if !running {
			l.wg.Done()
			return
		}
		if r := recover(); r != nil {
			panic(r) // not a Goexit: the process ends, and nothing more runs
		}
		// t's run ended this goroutine (runtime.Goexit, which rpc.Call
		// logs): it has run, and a new worker goes on.
		l.mu.Lock()
		next, ok, cr := l.doneLocked(t)
		if !ok {
			l.starting++
		}
		l.mu.Unlock()
		l.finish(cr)
		go l.loop(next, ok)
	}()
	l.mu.Lock()
	if !ok {
		l.starting--
	}
	for {
		if !ok {
			for l.head == len(l.q) && len(l.ready) == 0 && !l.closed {
				l.idle++
				l.wake.Wait()
				l.idle--
			}
			switch {
			case len(l.ready) > 0:
				t = l.ready[0]
				l.ready[0] = taken{} // the array outlives the slot: let go of its item
				if l.ready = l.ready[1:]; len(l.ready) == 0 {
					l.ready = nil
				}
			case l.head < len(l.q):
				t = taken{it: l.q[l.head]}
				l.takeLocked(1)
				t.seq = l.taken
				l.running[t.seq] = creditOf(&t.it) // from now on its credit is kept here
				t.it.Credit = 0
			default: // closed and empty
				l.workers--
				l.mu.Unlock()
				return
			}
			ok = l.admitLocked(t)
			if l.flushing.Load() > 0 {
				l.progressLocked() // for FlushStarted
			}
		}
		// Run it, then whatever its end lets run at once on this worker
		// (an event that waited for it).
		for ok {
			l.mu.Unlock()
			running = true
			l.run(t.it)
			running = false
			l.mu.Lock()
			var (
				next taken
				cr   credit
			)
			next, ok, cr = l.doneLocked(t)
			l.mu.Unlock()
			l.finish(cr)
			l.mu.Lock()
			t = next
		}
	}
}

// admitLocked keeps a membership event in its place among its executor's
// items, in a lane of several workers, where only messages give up their
// order: an event (OnExecutorAdded, OnExecutorRemoved) runs once the
// messages of its connection taken before it have returned (started, for
// an AfterStart event), and that connection's items taken after it run
// once it has. Other connections'
// items go on meanwhile, and no worker waits: an item that may not run
// yet is held (the worker takes another), and runs when it may. A worker
// waiting there would be one fewer for the others: a handler waiting for
// another executor's message (a long poll) could then wait for ever. It
// reports whether t may run now. l.mu is held.
func (l *Lane) admitLocked(t taken) bool {
	key := t.it.member()
	if key == nil {
		return true
	}
	m := l.members[key]
	if m == nil {
		if l.members == nil {
			l.members = map[*Conn]*member{}
		}
		m = &member{}
		l.members[key] = m
	}
	switch {
	case m.event != nil || m.inEvent:
		m.held = append(m.held, t)
		return false
	case t.it.Event == nil:
		m.running++
		return true
	case m.running > 0 && !t.it.AfterStart:
		e := t // only here on the heap: &t would move every t there
		m.event = &e
		return false
	}
	m.inEvent = true
	return true
}

// doneLocked records that t has run and returns what may run next on
// this worker: an event that waited for t (ok), if any; and t's credit,
// negated if it was lent. l.mu is held.
func (l *Lane) doneLocked(t taken) (next taken, ok bool, cr credit) {
	cr = l.running[t.seq]
	delete(l.running, t.seq)
	l.finished.Add(1)
	if l.flushing.Load() > 0 {
		l.progressLocked()
	}
	key := t.it.member()
	m := l.members[key]
	if key == nil || m == nil {
		return taken{}, false, cr
	}
	if t.it.Event != nil {
		m.inEvent = false
		if len(m.held) > 0 {
			l.ready = append(l.ready, m.held...)
			m.held = nil
			l.spawnLocked()
			l.wake.Broadcast()
		}
	} else if m.running--; m.running == 0 && m.event != nil {
		next, ok = *m.event, true
		m.event, m.inEvent = nil, true
	}
	if m.running == 0 && m.event == nil && !m.inEvent && len(m.held) == 0 {
		delete(l.members, key)
	}
	return next, ok, cr
}
