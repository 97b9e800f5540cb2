package jobs

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cmesh/cmesh-run/status"
)

// WriteJSON streams what encoding/json would print whole: the two must agree
// byte for byte, or a PHP reader comparing answers would see a change.
func TestChunkWriteJSONIsEncodingJSON(t *testing.T) {
	inputs := [][]byte{
		nil, []byte(""), []byte("plain text\n"), []byte("<a href=\"x\">&amp;</a>\\"),
		[]byte("\x00\x01\x07\b\f\n\r\t\x1b[31m\x7f"), []byte("caf\xc3\xa9 \xe2\x80\xa8 \xe2\x80\xa9 \xef\xbf\xbd"),
		[]byte("\xff\xfe\xfd run of invalid"), []byte("cut \xe2\x82"), []byte("\xc3"), []byte("a\xffb\xffc"),
		[]byte("\xed\xa0\x80 surrogate"), []byte("\xf4\x90\x80\x80 above U+10FFFF"), []byte("\xe2\x82\xac\xf0\x9f\x98\x80"),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, r.IntN(64))
		for i := range b {
			switch r.IntN(4) {
			case 0:
				b[i] = byte(r.IntN(0x20))
			case 1:
				b[i] = byte(0x80 + r.IntN(0x80))
			default:
				b[i] = byte(0x20 + r.IntN(0x60))
			}
		}
		inputs = append(inputs, b)
	}
	for _, in := range inputs {
		c := LogChunk{ID: "20261204T030000Z-abc", State: status.Running, Offset: 12, NextOffset: 99, Data: in, Done: true}
		var got, want bytes.Buffer
		if err := c.WriteJSON(&got); err != nil {
			t.Fatal(err)
		}
		whole := struct {
			ID         string       `json:"id"`
			State      status.State `json:"state"`
			Offset     int64        `json:"offset"`
			NextOffset int64        `json:"next_offset"`
			Data       string       `json:"data"`
			Done       bool         `json:"done"`
		}{c.ID, c.State, c.Offset, c.NextOffset, strings.ToValidUTF8(string(in), "\uFFFD"), c.Done}
		if err := json.NewEncoder(&want).Encode(whole); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("data %q:\nstreamed %s\nprintJSON %s", in, got.Bytes(), want.Bytes())
		}
	}
}

// A spool request's job-system fields reach the typed request as the
// flags of the same names do.
func TestSpoolRequestDecode(t *testing.T) {
	q := SpoolRequest{RequestID: "r1", Profile: "build", Args: map[string]string{"b": "2", "a": "1"}, Queue: "deploy",
		After: []string{"20261204-030000.000000-aaaaaa"}, AfterAny: true, In: "10m"}
	r, err := q.Decode("spool:www-data")
	if err != nil {
		t.Fatal(err)
	}
	if *r.Profile != "build" || strings.Join(r.Args, " ") != "a=1 b=2" || *r.Queue != "deploy" || len(r.After) != 1 || !r.AfterAny ||
		r.In == nil || *r.In != 10*time.Minute || r.Backend != "spool" || r.Asker != "spool:www-data" {
		t.Errorf("decoded %+v", r)
	}
	if _, err := (SpoolRequest{In: "soon"}).Decode("x"); err == nil {
		t.Error("a bad in was taken")
	}
	at, err := (SpoolRequest{At: "2026-12-24T03:00:00Z"}).Decode("x")
	if err != nil || at.NotBefore == nil || !at.NotBefore.Equal(time.Date(2026, 12, 24, 3, 0, 0, 0, time.UTC)) {
		t.Errorf("at: %+v, %v", at.NotBefore, err)
	}
}
