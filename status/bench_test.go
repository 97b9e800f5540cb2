package status

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// bigOutput writes an output file of about size bytes of 100-byte lines
// between a start and an end marker.
func bigOutput(b *testing.B, size int) *Output {
	path := filepath.Join(b.TempDir(), "big.out")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	f.Write(start.Format(nonce))
	line := strings.Repeat("x", 99) + "\n"
	chunk := []byte(strings.Repeat(line, 10000))
	for n := 0; n < size; n += len(chunk) {
		f.Write(chunk)
	}
	f.Write(end7.Format(nonce))
	f.Close()
	o, err := OpenOutput(path, nonce)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { o.Close() })
	return o
}

// Tail and ranged reads must cost what they return, not the file's size:
// compare the 1 MiB and 256 MiB variants.
func BenchmarkTail100(b *testing.B) {
	for _, size := range []int{1 << 20, 256 << 20} {
		o := bigOutput(b, size)
		b.Run(sizeName(size), func(b *testing.B) {
			for b.Loop() {
				if _, err := o.Tail(100, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReadAt64K(b *testing.B) {
	for _, size := range []int{1 << 20, 256 << 20} {
		o := bigOutput(b, size)
		b.Run(sizeName(size), func(b *testing.B) {
			for b.Loop() {
				if _, err := o.Read(int64(size/2), int64(size/2+64<<10), false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func sizeName(n int) string { return strconv.Itoa(n>>20) + "MiB" }
