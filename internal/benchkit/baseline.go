// Package benchkit holds the raw-transport baselines and statistics that
// cmd/ember-bench measures Ember against, in the same run: a TCP
// ping-pong, a gRPC bidirectional-stream ping-pong, a gRPC unary call, a
// gRPC one-way stream (one gRPC message per payload), a pipelined gRPC
// stream and a gRPC server push (one gRPC message per payload, from the
// server). The gRPC baselines use a []byte codec, so they cost gRPC and
// HTTP/2 and nothing else.
package benchkit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emberhq/ember/internal/rpc"
	"github.com/emberhq/ember/internal/stamp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// Window sizes, the same as Ember's driver and executors use, so that both
// sides of a comparison have the same gRPC tuning.
const (
	window     = rpc.StreamWindow
	connWindow = rpc.ConnWindow
)

// bytesCodec passes []byte through untouched.
type bytesCodec struct{}

// Marshal copies: gRPC may hold the bytes until they are written, while
// the caller reuses its buffer (protobuf marshaling allocates too).
func (bytesCodec) Marshal(v any) ([]byte, error) { return append([]byte(nil), *(v.(*[]byte))...), nil }
func (bytesCodec) Unmarshal(b []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], b...)
	return nil
}
func (bytesCodec) Name() string { return "benchkit-bytes" }

func init() { encoding.RegisterCodec(bytesCodec{}) }

// service is a hand-written gRPC service (no generated code needed).
type service struct{}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "benchkit.Raw",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var b []byte
			if err := dec(&b); err != nil {
				return nil, err
			}
			return &b, nil
		},
	}},
	Streams: []grpc.StreamDesc{
		{ // echo every message: ping-pong and pipelined
			StreamName: "Echo", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, s grpc.ServerStream) error {
				var b []byte
				for k := uint64(1); ; k++ {
					if err := s.RecvMsg(&b); err != nil {
						return nil
					}
					if stamp.Enabled {
						stamp.Mark(stamp.RawServerRead, k)
					}
					if err := s.SendMsg(&b); err != nil {
						return err
					}
					if stamp.Enabled {
						stamp.Mark(stamp.RawServerSent, k)
					}
				}
			},
		},
		{ // count messages; answer the count when the client closes
			StreamName: "OneWay", ClientStreams: true,
			Handler: func(_ any, s grpc.ServerStream) error {
				var b []byte
				var n uint64
				for {
					if err := s.RecvMsg(&b); err != nil {
						if !errors.Is(err, io.EOF) {
							return err
						}
						out := binary.BigEndian.AppendUint64(nil, n)
						return s.SendMsg(&out)
					}
					n++
				}
			},
		},
		{ // push as many messages of the asked size as the client asks for
			StreamName: "Push", ServerStreams: true,
			Handler: func(_ any, s grpc.ServerStream) error {
				var ask []byte
				if err := s.RecvMsg(&ask); err != nil {
					return err
				}
				if len(ask) != 16 {
					return fmt.Errorf("push: ask of %d bytes, want 16", len(ask))
				}
				n, size := binary.BigEndian.Uint64(ask), binary.BigEndian.Uint64(ask[8:])
				msg := make([]byte, size)
				for range n {
					if err := s.SendMsg(&msg); err != nil {
						return err
					}
				}
				return nil
			},
		},
	},
}

// Server is a running raw gRPC server.
type Server struct {
	Addr string
	srv  *grpc.Server
	done chan struct{}
}

// StartGRPC starts the raw gRPC server on a loopback port.
func StartGRPC() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(grpc.InitialWindowSize(window), grpc.InitialConnWindowSize(connWindow), grpc.ForceServerCodec(bytesCodec{}))
	srv.RegisterService(&serviceDesc, service{})
	s := &Server{Addr: lis.Addr().String(), srv: srv, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = srv.Serve(lis)
	}()
	return s, nil
}

// Stop stops the server.
func (s *Server) Stop() {
	s.srv.Stop()
	<-s.done
}

func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(window), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(bytesCodec{})))
}

// GRPCPingPong sends n messages of size bytes on one bidirectional stream,
// one at a time, and returns each round trip's duration.
func GRPCPingPong(ctx context.Context, addr string, size, n int) ([]time.Duration, error) {
	cc, s, err := openStream(ctx, addr, 0, nil)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	msg, reply := make([]byte, size), make([]byte, 0, size)
	out := make([]time.Duration, 0, n)
	for k := range uint64(n) {
		start := time.Now()
		if stamp.Enabled {
			stamp.Mark(stamp.RawSend, k+1)
		}
		if err := s.SendMsg(&msg); err != nil {
			return nil, err
		}
		if stamp.Enabled {
			stamp.Mark(stamp.RawSent, k+1)
		}
		if err := s.RecvMsg(&reply); err != nil {
			return nil, err
		}
		if stamp.Enabled {
			stamp.Mark(stamp.RawRead, k+1)
		}
		out = append(out, time.Since(start))
	}
	return out, s.CloseSend()
}

// GRPCUnary makes n unary calls of size bytes, one at a time.
func GRPCUnary(ctx context.Context, addr string, size, n int) ([]time.Duration, error) {
	cc, err := dial(addr)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	msg, reply := make([]byte, size), make([]byte, 0, size)
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := cc.Invoke(ctx, "/benchkit.Raw/Unary", &msg, &reply); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// openStream connects to addr, opens the stream serviceDesc.Streams[i]
// and calls ready, if not nil, before returning them. On error, nothing
// is left open.
func openStream(ctx context.Context, addr string, i int, ready func() error) (*grpc.ClientConn, grpc.ClientStream, error) {
	cc, err := dial(addr)
	if err != nil {
		return nil, nil, err
	}
	desc := &serviceDesc.Streams[i]
	s, err := cc.NewStream(ctx, desc, "/"+serviceDesc.ServiceName+"/"+desc.StreamName)
	if err == nil && ready != nil {
		err = ready()
	}
	if err != nil {
		cc.Close()
		return nil, nil, err
	}
	return cc, s, nil
}

// GRPCOneWay streams n messages of size bytes, one gRPC message each, and
// returns the time until the server has counted them all. ready, if not
// nil, is called once the stream is open and before the clock starts (see
// GRPCPipelined).
func GRPCOneWay(ctx context.Context, addr string, size, n int, ready func() error) (time.Duration, error) {
	cc, s, err := openStream(ctx, addr, 1, ready)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	msg := make([]byte, size)
	start := time.Now()
	for range n {
		if err := s.SendMsg(&msg); err != nil {
			return 0, err
		}
	}
	if err := s.CloseSend(); err != nil {
		return 0, err
	}
	var count []byte
	if err := s.RecvMsg(&count); err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	if got := binary.BigEndian.Uint64(count); got != uint64(n) {
		return 0, fmt.Errorf("one-way: server counted %d of %d", got, n)
	}
	return elapsed, nil
}

// GRPCPush asks the server to push n messages of size bytes, one gRPC
// message each, and returns the time until it has received them all.
// ready, if not nil, is called once the stream is open and before the
// clock starts (see GRPCPipelined).
func GRPCPush(ctx context.Context, addr string, size, n int, ready func() error) (time.Duration, error) {
	cc, s, err := openStream(ctx, addr, 2, ready)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	start := time.Now()
	ask := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(n)), uint64(size))
	if err := s.SendMsg(&ask); err != nil {
		return 0, err
	}
	if err := s.CloseSend(); err != nil {
		return 0, err
	}
	msg := make([]byte, 0, size)
	for i := range n {
		if err := s.RecvMsg(&msg); err != nil {
			return 0, fmt.Errorf("push: message %d of %d: %w", i, n, err)
		}
	}
	elapsed := time.Since(start)
	if err := s.RecvMsg(&msg); !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("push: got more than %d messages, or no clean end (%v)", n, err)
	}
	return elapsed, nil
}

// GRPCPipelined keeps up to outstanding messages in flight on one echo
// stream until n have come back, and returns the elapsed time. ready, if
// not nil, is called once the stream is open and before the clock starts,
// so that several clients can be started together; it returns an error to
// abandon the run.
func GRPCPipelined(ctx context.Context, addr string, size, n, outstanding int, ready func() error) (time.Duration, error) {
	cc, s, err := openStream(ctx, addr, 0, ready)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	tokens := make(chan struct{}, outstanding)
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		reply := make([]byte, 0, size)
		for range n {
			if err := s.RecvMsg(&reply); err != nil {
				errc <- err
				return
			}
			<-tokens
		}
		errc <- nil
	}()
	msg := make([]byte, size)
	for range n {
		tokens <- struct{}{}
		if err := s.SendMsg(&msg); err != nil {
			return 0, err
		}
	}
	if err := <-errc; err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	return elapsed, s.CloseSend()
}

// TCPServer echoes fixed-size messages on loopback: the floor.
type TCPServer struct {
	Addr string
	lis  net.Listener
	wg   sync.WaitGroup
}

// StartTCP starts an echo server for messages of size bytes.
func StartTCP(size int) (*TCPServer, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &TCPServer{Addr: lis.Addr().String(), lis: lis}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				buf := make([]byte, size)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s, nil
}

// Stop stops the server once its clients have gone.
func (s *TCPServer) Stop() {
	s.lis.Close()
	s.wg.Wait()
}

// TCPPingPong sends n messages of size bytes one at a time and returns
// each round trip's duration.
func TCPPingPong(addr string, size, n int) ([]time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	buf := make([]byte, size)
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := c.Write(buf); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
