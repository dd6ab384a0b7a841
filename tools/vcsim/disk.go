package main

// Real disk files: VMDK text descriptors, sparse flat extents, sparse copies and the
// scans that find allocated (non-zero) areas of a flat file.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

const (
	kib = int64(1024)
	mib = 1024 * kib

	// cbtGrain is the granularity of changed-block tracking, as on ESXi.
	cbtGrain = 64 * kib
	// ioChunk is the buffer size for copies and scans (never a whole file in memory).
	ioChunk = 1 * mib

	seekData = 3 // SEEK_DATA on Linux
	seekHole = 4 // SEEK_HOLE on Linux
)

// extent is a half-open byte range [start, end).
type extent struct {
	start, end int64
}

func alignDown(v, a int64) int64 { return v / a * a }
func alignUp(v, a int64) int64   { return (v + a - 1) / a * a }

func minInt64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// mergeExtents sorts and merges overlapping or touching extents.
func mergeExtents(xs []extent) []extent {
	if len(xs) == 0 {
		return nil
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].start < xs[j].start })
	out := []extent{xs[0]}
	for _, x := range xs[1:] {
		last := &out[len(out)-1]
		if x.start <= last.end {
			last.end = maxInt64(last.end, x.end)
			continue
		}
		out = append(out, x)
	}
	return out
}

// clipAligned widens x to cbtGrain and clips it to the window w.
func clipAligned(x extent, w extent) (extent, bool) {
	s := maxInt64(alignDown(x.start, cbtGrain), w.start)
	e := minInt64(alignUp(x.end, cbtGrain), w.end)
	return extent{s, e}, s < e
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return b
}

func randomCID() uint32 {
	for {
		v := binary.BigEndian.Uint32(randomBytes(4))
		if v != 0 && v != 0xffffffff {
			return v
		}
	}
}

// newDiskUUID returns a backing uuid in the form vSphere uses, e.g. 6000C298-5d2e-...
func newDiskUUID() string {
	b := randomBytes(16)
	return fmt.Sprintf("6000C29%x-%x-%x-%x-%x", b[3]&0x0f, b[4:6], b[6:8], b[8:10], b[10:16])
}

// newCBTID returns the id part of a changeId: 16 hex bytes with spaces and a dash in the
// middle, e.g. "52 1e 2f 8a 72 1b 7f 9a-5c 81 2e 6e 17 4b 6b 0f".
func newCBTID() string {
	b := randomBytes(16)
	b[0] = 0x52
	return spacedHex(b[:8]) + "-" + spacedHex(b[8:])
}

func spacedHex(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, " ")
}

// ddbUUID turns a backing uuid into the descriptor's "60 00 c2 ..." form.
func ddbUUID(u string) string {
	h := strings.ReplaceAll(u, "-", "")
	var parts []string
	for i := 0; i+2 <= len(h); i += 2 {
		parts = append(parts, strings.ToLower(h[i:i+2]))
	}
	return strings.Join(parts, " ")
}

// flatName is the extent file of a descriptor: "x.vmdk" -> "x-flat.vmdk".
func flatName(descriptor string) string {
	return strings.TrimSuffix(descriptor, ".vmdk") + "-flat.vmdk"
}

type descriptor struct {
	CID        uint32
	ParentCID  uint32 // 0xffffffff: no parent
	ParentHint string // file name of the parent descriptor, "" for a base disk
	Capacity   int64  // bytes, a multiple of 512
	Flat       string // file name of the flat extent (same folder)
	UUID       string // backing uuid
	Adapter    string // ddb.adapterType
	HWVersion  string
	ContentID  string
}

// writeDescriptor writes a genuine monolithicFlat/vmfs text descriptor (atomically).
func writeDescriptor(path string, d descriptor) error {
	sectors := d.Capacity / 512
	heads, spt := int64(255), int64(63)
	if d.Capacity < 1024*mib {
		heads, spt = 64, 32
	}
	cyl := sectors / (heads * spt)
	if cyl < 1 {
		cyl = 1
	}
	if d.ParentCID == 0 {
		d.ParentCID = 0xffffffff
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=%08x\nparentCID=%08x\n", d.CID, d.ParentCID)
	fmt.Fprintf(&b, "createType=\"vmfs\"\n")
	if d.ParentHint != "" {
		fmt.Fprintf(&b, "parentFileNameHint=%q\n", d.ParentHint)
	}
	fmt.Fprintf(&b, "\n# Extent description\nRW %d VMFS %q\n\n", sectors, d.Flat)
	fmt.Fprintf(&b, "# The Disk Data Base\n#DDB\n\n")
	fmt.Fprintf(&b, "ddb.adapterType = %q\n", d.Adapter)
	if d.ParentHint != "" {
		fmt.Fprintf(&b, "ddb.deletable = \"true\"\n")
	}
	fmt.Fprintf(&b, "ddb.geometry.cylinders = \"%d\"\nddb.geometry.heads = \"%d\"\nddb.geometry.sectors = \"%d\"\n", cyl, heads, spt)
	fmt.Fprintf(&b, "ddb.longContentID = %q\n", d.ContentID)
	fmt.Fprintf(&b, "ddb.thinProvisioned = \"1\"\n")
	fmt.Fprintf(&b, "ddb.uuid = %q\n", ddbUUID(d.UUID))
	fmt.Fprintf(&b, "ddb.virtualHWVersion = %q\n", d.HWVersion)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ensureFlat makes path a sparse file of exactly size bytes, keeping any content.
func ensureFlat(path string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Truncate(size)
}

// dataRegions lists the regions of f within [from, to) that may hold data, using
// SEEK_DATA/SEEK_HOLE (the whole range when the filesystem cannot tell).
func dataRegions(f *os.File, from, to int64) []extent {
	var out []extent
	off := from
	for off < to {
		d, err := f.Seek(off, seekData)
		if err != nil {
			if errors.Is(err, syscall.ENXIO) {
				break
			}
			return []extent{{from, to}}
		}
		if d >= to {
			break
		}
		h, err := f.Seek(d, seekHole)
		if err != nil || h > to {
			h = to
		}
		if h <= d {
			h = minInt64(d+ioChunk, to)
		}
		out = append(out, extent{d, h})
		off = h
	}
	return out
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// allocatedExtents returns the cbtGrain-aligned areas of the file within window w that
// hold non-zero data.
func allocatedExtents(path string, w extent) ([]extent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, ioChunk)
	var out []extent
	for _, r := range dataRegions(f, w.start, w.end) {
		off := alignDown(r.start, cbtGrain)
		end := minInt64(alignUp(r.end, cbtGrain), alignUp(w.end, cbtGrain))
		for off < end {
			n := minInt64(int64(len(buf)), end-off)
			got, err := f.ReadAt(buf[:n], off)
			if err != nil && err != io.EOF {
				return nil, err
			}
			for g := int64(0); g < int64(got); g += cbtGrain {
				ge := minInt64(g+cbtGrain, int64(got))
				if !isZero(buf[g:ge]) {
					if x, ok := clipAligned(extent{off + g, off + ge}, w); ok {
						out = append(out, x)
					}
				}
			}
			if int64(got) < n {
				break
			}
			off += n
		}
	}
	return mergeExtents(out), nil
}

// copySparse copies src into dst (created or truncated) writing only non-zero grains, so
// the copy stays sparse; dst ends up exactly size bytes long.
func copySparse(dst, src string, size int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := copySparseFile(out, in, size); err != nil {
		return err
	}
	return out.Truncate(size)
}

func copySparseFile(out, in *os.File, size int64) error {
	buf := make([]byte, ioChunk)
	for _, r := range dataRegions(in, 0, size) {
		off := alignDown(r.start, cbtGrain)
		for off < r.end {
			n := minInt64(int64(len(buf)), size-off)
			if n <= 0 {
				break
			}
			got, err := in.ReadAt(buf[:n], off)
			if err != nil && err != io.EOF {
				return err
			}
			for g := int64(0); g < int64(got); g += cbtGrain {
				ge := minInt64(g+cbtGrain, int64(got))
				if !isZero(buf[g:ge]) {
					if _, err := out.WriteAt(buf[g:ge], off+g); err != nil {
						return err
					}
				}
			}
			if int64(got) < n {
				break
			}
			off += n
		}
	}
	return nil
}
