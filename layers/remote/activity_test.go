package remote

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// seenActivity is a RoundTripper that notes whether the Activity counted
// the request it carries.
type seenActivity struct {
	act                *Activity
	counted, uncounted atomic.Int64
}

func (s *seenActivity) RoundTrip(r *http.Request) (*http.Response, error) {
	if s.act.Idle() == 0 {
		s.counted.Add(1)
	} else {
		s.uncounted.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestActivity: foreground requests count as activity while in flight,
// those of a Background context do not, and Idle grows once they end.
func TestActivity(t *testing.T) {
	data := []byte(text(5, 200_000))
	u, d := pushBlob(t, testenvRegistry(t), "act/blob", data)
	act := new(Activity)
	rt := &seenActivity{act: act}
	f, err := NewFetcher(rt, u, d, int64(len(data)), &Options{Activity: act})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1000)
	if _, err := f.ReadAtContext(context.Background(), buf, 10); err != nil {
		t.Fatal(err)
	}
	if rt.counted.Load() != 1 || rt.uncounted.Load() != 0 {
		t.Fatalf("foreground request: counted %d, uncounted %d", rt.counted.Load(), rt.uncounted.Load())
	}
	if _, err := f.ReadAtContext(Background(context.Background()), buf, 5000); err != nil {
		t.Fatal(err)
	}
	if rt.uncounted.Load() != 1 {
		t.Fatalf("background request counted as foreground")
	}
	time.Sleep(20 * time.Millisecond)
	if act.Idle() < 10*time.Millisecond {
		t.Fatalf("Idle %v after the requests ended", act.Idle())
	}
	var none *Activity
	if none.Idle() < time.Hour {
		t.Fatal("a nil Activity is not idle")
	}
}
