package libspbroker_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"time"

	"github.com/one-socket/one-socket/libspbroker"
)

// Two parties that agree on a key each call GetPair and get the two ends of
// one socketpair. They are usually two processes; here they are two
// goroutines.
func ExampleGetPair() {
	path := os.Getenv("ONE_SOCKET_PATH") // the broker's socket
	key := []byte("example-key")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	served := make(chan struct{})
	go func() {
		defer close(served)
		f, err := libspbroker.GetPair(ctx, path, key, libspbroker.ModeServer)
		if err != nil {
			log.Print(err)
			return
		}
		defer f.Close()
		fmt.Fprintln(f, "hello from the server")
	}()

	f, err := libspbroker.GetPair(ctx, path, key, libspbroker.ModeClient)
	if err != nil {
		log.Fatal(err)
	}
	// The File is ours. A net.Conn of it brings deadlines; f itself can
	// then be closed.
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(line)
	<-served
	// Output: hello from the server
}
