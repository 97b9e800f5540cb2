package jobs

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

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
