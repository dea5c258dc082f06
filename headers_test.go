package ember_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/emberhq/ember"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A peer without the secret cannot make the driver take a stream whose
// headers carry megabytes of metadata: with gRPC's default header list
// limit (16 MiB), one small field repeated and HPACK-indexed (a byte each
// on the wire) made the driver hold hundreds of MiB per connection, for
// the handshake timeout (measured: 5 GiB from 20 connections, 35 MiB
// sent). The stream is reset before any handler runs, so no CHALLENGE.
func TestHugeHeadersAreRefused(t *testing.T) {
	d := standalone(t, ember.Config{Secret: "right secret", BuildID: "test"})
	c, err := net.Dial("tcp", d.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute)) // a hung driver fails the test, not the run
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/ember.wire.v1.Ember/Connect"},
		{":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	for range 30000 { // about 1 MiB as HTTP/2 counts it, 30 KB on the wire
		_ = enc.WriteField(hpack.HeaderField{Name: "x-a", Value: "b"})
	}
	block := hb.Bytes()
	const max = 16 << 10
	first, rest := block, []byte(nil)
	if len(block) > max {
		first, rest = block[:max], block[max:]
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(rest) == 0}); err != nil {
		t.Fatal(err)
	}
	for len(rest) > 0 {
		chunk := rest[:min(len(rest), max)]
		rest = rest[len(chunk):]
		if err := fr.WriteContinuation(1, len(rest) == 0, chunk); err != nil {
			t.Fatal(err)
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return // the driver closed the connection: refused as well
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			return // refused
		case *http2.GoAwayFrame:
			return
		case *http2.HeadersFrame, *http2.DataFrame:
			if f.Header().StreamID == 1 {
				t.Fatalf("the driver took a stream with 1 MiB of header fields: got %v, want it reset", f.Header().Type)
			}
		}
	}
}
