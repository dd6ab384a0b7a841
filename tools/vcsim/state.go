package main

// Per-VM disk state kept next to the simulator's objects: the chain of real files behind
// each virtual disk, its snapshots, and changed block tracking.
//
// Every file in a disk's chain is a complete flat image (a delta starts as a sparse copy of
// its parent), so any snapshot's frozen file can be read on its own. All access to a
// vmState happens under the simulator's lock of its VirtualMachine.

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type link struct {
	file string                        // datastore path of the descriptor, "[ds] vm/vm.vmdk"
	cid  uint32                        // descriptor CID
	snap *types.ManagedObjectReference // snapshot that froze this file; nil for the writable one
}

// taggedArea is a written byte range tagged with the change sequence it was written in.
type taggedArea struct {
	extent
	seq int
}

type disk struct {
	key      int32
	uuid     string
	capacity int64
	adapter  string
	chain    []link // chain[0] is the base, the last link is what the VM writes to

	cbtID    string       // id part of this disk's changeIds; a reset replaces it
	epochMin int          // smallest sequence a changeId of this cbtID may carry
	areas    []taggedArea // writes since tracking became active (or the last reset)
}

type snapRec struct {
	ref       types.ManagedObjectReference
	obj       *lbSnapshot
	tree      types.VirtualMachineSnapshotTree
	seq       int              // change sequence frozen by this snapshot (0: CBT not active)
	changeIDs map[int32]string // disk key -> changeId at snapshot time ("" when not tracked)
	cbtIDs    map[int32]string // disk key -> cbtID at snapshot time
	vmsn      string           // local path of the .vmsn file
}

type vmState struct {
	vm *lbVM

	cbtEnabled bool // config.changeTrackingEnabled as last seen
	cbtActive  bool // tracking started (first snapshot after enabling)
	seq        int  // sequence that current writes are tagged with
	nextSnapID int32

	disks []*disk
	snaps []*snapRec // oldest first; snapshots form a single line (no revert, no branches)
}

var (
	statesMu sync.Mutex
	states   = map[types.ManagedObjectReference]*vmState{}
	order    []types.ManagedObjectReference
)

func registerState(st *vmState) {
	statesMu.Lock()
	defer statesMu.Unlock()
	ref := st.vm.Self
	if _, ok := states[ref]; !ok {
		order = append(order, ref)
	}
	states[ref] = st
}

func stateOf(ref types.ManagedObjectReference) *vmState {
	statesMu.Lock()
	defer statesMu.Unlock()
	return states[ref]
}

func allStates() []*vmState {
	statesMu.Lock()
	defer statesMu.Unlock()
	out := make([]*vmState, 0, len(order))
	for _, ref := range order {
		st, ok := states[ref]
		if !ok {
			continue
		}
		if obj, ok := simulator.Map.Get(ref).(*lbVM); !ok || obj != st.vm {
			continue // destroyed (or replaced) since
		}
		out = append(out, st)
	}
	return out
}

// findState resolves a VM by moref value or by name.
func findState(id string) *vmState {
	for _, st := range allStates() {
		if st.vm.Self.Value == id {
			return st
		}
	}
	for _, st := range allStates() {
		if st.vm.Name == id {
			return st
		}
	}
	return nil
}

// --- datastore paths -------------------------------------------------------------------

func findDatastoreByName(name string) *simulator.Datastore {
	for _, e := range simulator.Map.All("Datastore") {
		if ds, ok := e.(*simulator.Datastore); ok && ds.Name == name {
			return ds
		}
	}
	return nil
}

// localPath maps "[ds] dir/file" to the real file under the datastore's folder.
func localPath(dsPath string) (string, error) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return "", fmt.Errorf("invalid datastore path %q", dsPath)
	}
	ds := findDatastoreByName(p.Datastore)
	if ds == nil {
		return "", fmt.Errorf("datastore %q not found", p.Datastore)
	}
	return filepath.Join(ds.Info.GetDatastoreInfo().Url, filepath.FromSlash(path.Clean("/"+p.Path))), nil
}

func datastoreRef(dsPath string) *types.ManagedObjectReference {
	var p object.DatastorePath
	p.FromString(dsPath)
	if ds := findDatastoreByName(p.Datastore); ds != nil {
		ref := ds.Self
		return &ref
	}
	return nil
}

// --- disks -----------------------------------------------------------------------------

func (d *disk) current() *link { return &d.chain[len(d.chain)-1] }

func (d *disk) flatPath(i int) (string, error) {
	return localPath(flatName(d.chain[i].file))
}

func (d *disk) currentFlat() (string, error) { return d.flatPath(len(d.chain) - 1) }

func (d *disk) linkOf(snap types.ManagedObjectReference) int {
	for i := range d.chain {
		if d.chain[i].snap != nil && *d.chain[i].snap == snap {
			return i
		}
	}
	return -1
}

// writeDescriptors rewrites every descriptor of the chain (parent CIDs and hints included).
func (d *disk) writeDescriptors(hw string) error {
	for i := range d.chain {
		l := &d.chain[i]
		p, err := localPath(l.file)
		if err != nil {
			return err
		}
		desc := descriptor{
			CID:       l.cid,
			Capacity:  d.capacity,
			Flat:      path.Base(flatName(l.file)),
			UUID:      d.uuid,
			Adapter:   d.adapter,
			HWVersion: hw,
			ContentID: fmt.Sprintf("%08x%08x%08x%08x", l.cid, l.cid^0x5a5a5a5a, uint32(d.key), uint32(i)),
		}
		if i > 0 {
			desc.ParentCID = d.chain[i-1].cid
			desc.ParentHint = path.Base(d.chain[i-1].file)
		}
		if err := writeDescriptor(p, desc); err != nil {
			return err
		}
	}
	return nil
}

// record notes a write of [start, end) in the current sequence (when tracking is active).
func (st *vmState) record(d *disk, start, end int64) {
	if !st.cbtActive || end <= start {
		return
	}
	if n := len(d.areas); n > 0 {
		last := &d.areas[n-1]
		if last.seq == st.seq && start <= last.end && end >= last.start {
			last.start = minInt64(last.start, start)
			last.end = maxInt64(last.end, end)
			return
		}
	}
	d.areas = append(d.areas, taggedArea{extent{start, end}, st.seq})
}

func (st *vmState) disk(key int32) *disk {
	for _, d := range st.disks {
		if d.key == key {
			return d
		}
	}
	return nil
}

func hwVersion(vm *lbVM) string {
	return strings.TrimPrefix(vm.Config.Version, "vmx-")
}

func adapterFor(vm *lbVM, controllerKey int32) string {
	for _, dev := range vm.Config.Hardware.Device {
		if dev.GetVirtualDevice().Key != controllerKey {
			continue
		}
		switch dev.(type) {
		case *types.VirtualIDEController:
			return "ide"
		case *types.VirtualBusLogicController:
			return "buslogic"
		}
	}
	return "lsilogic"
}

func diskDevices(vm *lbVM) []*types.VirtualDisk {
	var out []*types.VirtualDisk
	for _, dev := range vm.Config.Hardware.Device {
		if d, ok := dev.(*types.VirtualDisk); ok {
			out = append(out, d)
		}
	}
	return out
}

func roundUp(v, a int64) int64 { return alignUp(v, a) }

// initDisk gives a disk device that has no state yet real files: a descriptor and a sparse
// flat extent of its capacity.
func (st *vmState) initDisk(dev *types.VirtualDisk) (*disk, error) {
	b, ok := dev.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return nil, fmt.Errorf("disk %d: unsupported backing %T", dev.Key, dev.Backing)
	}
	capacity := dev.CapacityInBytes
	if capacity == 0 {
		capacity = dev.CapacityInKB * kib
	}
	capacity = roundUp(capacity, kib)
	if capacity <= 0 {
		capacity = defaultDiskSize
	}
	uuid := b.Uuid
	if uuid == "" {
		uuid = newDiskUUID()
	}
	d := &disk{
		key:      dev.Key,
		uuid:     uuid,
		capacity: capacity,
		adapter:  adapterFor(st.vm, dev.ControllerKey),
		chain:    []link{{file: b.FileName, cid: randomCID()}},
		cbtID:    newCBTID(),
		epochMin: st.seq,
	}
	flat, err := d.currentFlat()
	if err != nil {
		return nil, err
	}
	if err := ensureFlat(flat, capacity); err != nil {
		return nil, err
	}
	if err := d.writeDescriptors(hwVersion(st.vm)); err != nil {
		return nil, err
	}
	st.disks = append(st.disks, d)
	return d, nil
}

// sync reconciles the state with the VM's configuration after a reconfigure: CBT switched
// on or off, disks added or removed.
func (st *vmState) sync() error {
	vm := st.vm
	enabled := vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled
	switch {
	case enabled && !st.cbtEnabled:
		st.cbtEnabled = true
		st.cbtActive = false // becomes active at the next snapshot, as on vSphere
		for _, d := range st.disks {
			d.cbtID = newCBTID()
			d.areas = nil
		}
	case !enabled && st.cbtEnabled:
		st.cbtEnabled = false
		st.cbtActive = false
		for _, d := range st.disks {
			d.areas = nil
		}
	}

	present := map[int32]bool{}
	for _, dev := range diskDevices(vm) {
		present[dev.Key] = true
		if st.disk(dev.Key) == nil {
			if _, err := st.initDisk(dev); err != nil {
				return err
			}
		}
	}
	kept := st.disks[:0]
	for _, d := range st.disks {
		if present[d.key] {
			kept = append(kept, d)
		}
	}
	st.disks = kept
	st.applyBackings()
	return nil
}

// backing builds the backing of chain link i (with its parents).
func (d *disk) backing(i int, changeID string) *types.VirtualDiskFlatVer2BackingInfo {
	l := d.chain[i]
	b := &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
			FileName:  l.file,
			Datastore: datastoreRef(l.file),
		},
		DiskMode:        string(types.VirtualDiskModePersistent),
		Split:           types.NewBool(false),
		WriteThrough:    types.NewBool(false),
		ThinProvisioned: types.NewBool(true),
		EagerlyScrub:    types.NewBool(false),
		Uuid:            d.uuid,
		ContentId:       fmt.Sprintf("%08x%024x", l.cid, uint64(d.key)),
		ChangeId:        changeID,
		DigestEnabled:   types.NewBool(false),
		Sharing:         "sharingNone",
	}
	if i > 0 {
		b.Parent = d.backing(i-1, "")
		b.DeltaDiskFormat = "redoLogFormat"
		b.DeltaGrainSize = 0
	}
	return b
}

// currentChangeID is the changeId the running disk shows: the one of the last snapshot in
// this tracking epoch, "" before tracking is active.
func (st *vmState) currentChangeID(d *disk) string {
	if !st.cbtActive || st.seq-1 < d.epochMin {
		return ""
	}
	return d.cbtID + "/" + strconv.Itoa(st.seq-1)
}

// applyBackings writes the disk state into the VM's devices and every snapshot's config.
func (st *vmState) applyBackings() {
	for _, dev := range diskDevices(st.vm) {
		d := st.disk(dev.Key)
		if d == nil {
			continue
		}
		dev.Backing = d.backing(len(d.chain)-1, st.currentChangeID(d))
		dev.CapacityInBytes = d.capacity
		dev.CapacityInKB = d.capacity / kib
		summary := fmt.Sprintf("%s KB", commas(d.capacity/kib))
		if info := dev.DeviceInfo; info != nil {
			info.GetDescription().Summary = summary
		}
	}
	for _, rec := range st.snaps {
		for _, dev := range rec.obj.Config.Hardware.Device {
			vd, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			d := st.disk(vd.Key)
			if d == nil {
				continue
			}
			if i := d.linkOf(rec.ref); i >= 0 {
				vd.Backing = d.backing(i, rec.changeIDs[vd.Key])
			}
		}
	}
	vm := st.vm
	vm.Summary.Config.NumVirtualDisks = int32(len(st.disks))
}

func commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	var out []string
	for len(s) > 3 {
		out = append([]string{s[len(s)-3:]}, out...)
		s = s[:len(s)-3]
	}
	return strings.Join(append([]string{s}, out...), ",")
}

// nextDeltaName picks "[ds] vm/<base>-00000N.vmdk", the first N whose files do not exist.
func nextDeltaName(d *disk) (string, error) {
	base := strings.TrimSuffix(d.chain[0].file, ".vmdk")
	for n := 1; n < 1000000; n++ {
		name := fmt.Sprintf("%s-%06d.vmdk", base, n)
		used := false
		for _, l := range d.chain {
			if l.file == name {
				used = true
			}
		}
		if used {
			continue
		}
		p, err := localPath(name)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(p); err == nil {
			continue
		}
		return name, nil
	}
	return "", fmt.Errorf("no free delta name for %s", d.chain[0].file)
}

// deepCopyDevices copies the device list so that a snapshot's config does not share the
// disks (whose backings change) or the slice with the VM.
func deepCopyDevices(devs []types.BaseVirtualDevice) []types.BaseVirtualDevice {
	out := make([]types.BaseVirtualDevice, 0, len(devs))
	for _, dev := range devs {
		if d, ok := dev.(*types.VirtualDisk); ok {
			c := *d
			if b, ok := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok {
				bc := *b
				c.Backing = &bc
			}
			if d.DeviceInfo != nil {
				info := *d.DeviceInfo.GetDescription()
				c.DeviceInfo = &info
			}
			out = append(out, &c)
			continue
		}
		out = append(out, dev)
	}
	return out
}

// snapshotInfo rebuilds vm.snapshot from the linear list of snapshots.
func (st *vmState) snapshotInfo() *types.VirtualMachineSnapshotInfo {
	if len(st.snaps) == 0 {
		return nil
	}
	var build func(i int) []types.VirtualMachineSnapshotTree
	build = func(i int) []types.VirtualMachineSnapshotTree {
		if i >= len(st.snaps) {
			return nil
		}
		t := st.snaps[i].tree
		t.ChildSnapshotList = build(i + 1)
		return []types.VirtualMachineSnapshotTree{t}
	}
	cur := st.snaps[len(st.snaps)-1].ref
	for i, rec := range st.snaps {
		rec.obj.ChildSnapshot = nil
		if i+1 < len(st.snaps) {
			rec.obj.ChildSnapshot = []types.ManagedObjectReference{st.snaps[i+1].ref}
		}
	}
	return &types.VirtualMachineSnapshotInfo{CurrentSnapshot: &cur, RootSnapshotList: build(0)}
}

// publish tells the simulator (and waiting property collectors) about the new state.
func (st *vmState) publish(ctx *simulator.Context) {
	vm := st.vm
	info := st.snapshotInfo()
	vm.Snapshot = info
	refreshLayout(ctx, st)
	changes := []types.PropertyChange{
		{Name: "config.hardware.device", Val: []types.BaseVirtualDevice(vm.Config.Hardware.Device)},
		{Name: "summary.config.numVirtualDisks", Val: vm.Summary.Config.NumVirtualDisks},
	}
	if info == nil {
		changes = append(changes, types.PropertyChange{Name: "snapshot", Val: nil})
	} else {
		changes = append(changes, types.PropertyChange{Name: "snapshot", Val: info})
	}
	simulator.Map.Update(vm, changes)
	vm.Snapshot = info // Map.Update stores a copy; keep the one we built
}

// refreshLayout lets the simulator rescan the VM's files (layoutEx, storage usage) and adds
// the snapshot layouts it cannot know about.
func refreshLayout(ctx *simulator.Context, st *vmState) {
	vm := st.vm
	if vm.Runtime.Host == nil || vm.Layout == nil || vm.LayoutEx == nil {
		return
	}
	vm.VirtualMachine.RefreshStorageInfo(ctx, &types.RefreshStorageInfo{This: vm.Self})
	// Stock RefreshStorageInfo lists the VM folder's files without the folder
	// ("[ds] x.vmx"); name them in full, dropping those already listed that way.
	var vmx object.DatastorePath
	vmx.FromString(vm.Config.Files.VmPathName)
	dir := path.Dir(vmx.Path)
	seen := map[string]bool{}
	for _, f := range vm.LayoutEx.File {
		seen[f.Name] = true
	}
	files := vm.LayoutEx.File[:0]
	for _, f := range vm.LayoutEx.File {
		var p object.DatastorePath
		if p.FromString(f.Name) && !strings.Contains(p.Path, "/") && dir != "." && dir != "" {
			full := (&object.DatastorePath{Datastore: p.Datastore, Path: path.Join(dir, p.Path)}).String()
			if seen[full] {
				continue
			}
			f.Name = full
		}
		files = append(files, f)
	}
	vm.LayoutEx.File = files
	vm.Layout.Snapshot = nil
	vm.LayoutEx.Snapshot = nil
	for _, rec := range st.snaps {
		var files []string
		dataKey := int32(-1)
		for _, f := range vm.LayoutEx.File {
			if strings.HasSuffix(f.Name, "/"+filepath.Base(rec.vmsn)) {
				dataKey = f.Key
				files = append(files, f.Name)
			}
		}
		for _, d := range st.disks {
			if i := d.linkOf(rec.ref); i >= 0 {
				files = append(files, d.chain[i].file)
			}
		}
		vm.Layout.Snapshot = append(vm.Layout.Snapshot, types.VirtualMachineFileLayoutSnapshotLayout{
			Key: rec.ref, SnapshotFile: files,
		})
		vm.LayoutEx.Snapshot = append(vm.LayoutEx.Snapshot, types.VirtualMachineFileLayoutExSnapshotLayout{
			Key: rec.ref, DataKey: dataKey, MemoryKey: -1,
		})
	}
}
