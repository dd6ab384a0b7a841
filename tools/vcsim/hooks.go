package main

// The test-only hooks under /lifeboat-sim/: plain JSON, no session (tests write into a
// VM's running disk, load an image, add a disk, reset CBT, read the disk back).

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// --- test hooks (/lifeboat-sim/) -----------------------------------------------------------

type hookError struct {
	status int
	msg    string
}

func (e *hookError) Error() string { return e.msg }

func hookErr(status int, format string, a ...interface{}) *hookError {
	return &hookError{status, fmt.Sprintf(format, a...)}
}

// writeHookError answers a hook's failure: its own status for a hookError, else 500.
func writeHookError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if he, ok := err.(*hookError); ok {
		status = he.status
	}
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

type hookDisk struct {
	Key      int32    `json:"key"`
	File     string   `json:"file"`
	FlatPath string   `json:"flat_path"`
	Capacity int64    `json:"capacity"`
	UUID     string   `json:"uuid"`
	ChangeID string   `json:"change_id"`
	Chain    []string `json:"chain"`
}

type hookVM struct {
	Name           string     `json:"name"`
	Moref          string     `json:"moref"`
	UUID           string     `json:"uuid"`
	PowerState     string     `json:"power_state"`
	Firmware       string     `json:"firmware"`
	ChangeTracking bool       `json:"change_tracking"`
	CBTActive      bool       `json:"cbt_active"`
	Disks          []hookDisk `json:"disks"`
	Snapshots      int        `json:"snapshots"`
}

func describe(st *vmState) hookVM {
	vm := st.vm
	out := hookVM{
		Name:           vm.Name,
		Moref:          vm.Self.Value,
		UUID:           vm.Config.InstanceUuid,
		PowerState:     string(vm.Runtime.PowerState),
		Firmware:       vm.Config.Firmware,
		ChangeTracking: st.cbtEnabled,
		CBTActive:      st.cbtActive,
		Snapshots:      len(st.snaps),
		Disks:          []hookDisk{},
	}
	for _, d := range st.disks {
		flat, _ := d.currentFlat()
		hd := hookDisk{Key: d.key, File: d.current().file, FlatPath: flat, Capacity: d.capacity,
			UUID: d.uuid, ChangeID: st.currentChangeID(d)}
		for _, l := range d.chain {
			hd.Chain = append(hd.Chain, l.file)
		}
		out.Disks = append(out.Disks, hd)
	}
	return out
}

func (s *front) serveHooks(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/lifeboat-sim/")
	q := r.URL.Query()
	if name == "vms" {
		if r.Method != http.MethodGet {
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "GET only"})
			return
		}
		list := []hookVM{}
		for _, st := range allStates() {
			simulator.Map.WithLock(st.vm, func() { list = append(list, describe(st)) })
		}
		writeJSON(w, http.StatusOK, list)
		return
	}

	st := findState(q.Get("vm"))
	if st == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no virtual machine %q", q.Get("vm"))})
		return
	}
	var result interface{} = map[string]bool{"ok": true}
	var err error
	switch {
	case name == "read" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		s.hookRead(w, r, st)
		return
	case r.Method != http.MethodPost:
		err = hookErr(http.StatusMethodNotAllowed, "POST only")
	case name == "write":
		err = s.hookWrite(r, st)
	case name == "load":
		err = s.hookLoad(r, st)
	case name == "reset-cbt":
		err = s.hookResetCBT(r, st)
	case name == "add-disk":
		var key int32
		key, err = s.hookAddDisk(r, st)
		result = map[string]int32{"key": key}
	default:
		err = hookErr(http.StatusNotFound, "unknown test hook %q", name)
	}
	if err != nil {
		writeHookError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, result)
}

func hookDiskOf(st *vmState, r *http.Request) (*disk, error) {
	key, err := strconv.Atoi(r.URL.Query().Get("disk"))
	if err != nil {
		return nil, hookErr(http.StatusBadRequest, "disk must be a device key")
	}
	d := st.disk(int32(key))
	if d == nil {
		return nil, hookErr(http.StatusNotFound, "no disk with key %d on %s", key, st.vm.Name)
	}
	return d, nil
}

func internalCtx() *simulator.Context {
	return &simulator.Context{Context: context.Background(), Map: simulator.Map}
}

// hookWrite writes the body into the VM's current disk file and records the change.
func (s *front) hookWrite(r *http.Request, st *vmState) (err error) {
	offset, perr := strconv.ParseInt(r.URL.Query().Get("offset"), 10, 64)
	if perr != nil || offset < 0 {
		return hookErr(http.StatusBadRequest, "offset must be a non-negative integer")
	}
	simulator.Map.WithLock(st.vm, func() {
		d, e := hookDiskOf(st, r)
		if e != nil {
			err = e
			return
		}
		if offset > d.capacity || (r.ContentLength > 0 && offset+r.ContentLength > d.capacity) {
			err = hookErr(http.StatusBadRequest, "write [%d, +%d) beyond the disk's capacity %d", offset, r.ContentLength, d.capacity)
			return
		}
		flat, e := d.currentFlat()
		if e != nil {
			err = e
			return
		}
		f, e := os.OpenFile(flat, os.O_WRONLY, 0)
		if e != nil {
			err = e
			return
		}
		defer f.Close()
		if _, e := f.Seek(offset, io.SeekStart); e != nil {
			err = e
			return
		}
		n, e := io.Copy(f, io.LimitReader(r.Body, d.capacity-offset+1))
		if offset+n > d.capacity {
			_ = f.Truncate(d.capacity)
			n = d.capacity - offset
			e = hookErr(http.StatusBadRequest, "write beyond the disk's capacity %d (truncated)", d.capacity)
		}
		st.record(d, offset, offset+n)
		err = e
	})
	return err
}

// hookLoad replaces a disk's content with a local raw image.
func (s *front) hookLoad(r *http.Request, st *vmState) (err error) {
	src := r.URL.Query().Get("path")
	in, e := os.Open(src)
	if e != nil {
		return hookErr(http.StatusBadRequest, "cannot open %q: %v", src, e)
	}
	defer in.Close()
	fi, e := in.Stat()
	if e != nil || fi.IsDir() {
		return hookErr(http.StatusBadRequest, "%q is not a file", src)
	}
	capacity := roundUp(fi.Size(), mib)
	if capacity == 0 {
		capacity = mib
	}
	simulator.Map.WithLock(st.vm, func() {
		d, e := hookDiskOf(st, r)
		if e != nil {
			err = e
			return
		}
		if len(st.snaps) > 0 && capacity != d.capacity {
			err = hookErr(http.StatusConflict, "cannot change the capacity of a disk with snapshots (%d -> %d)", d.capacity, capacity)
			return
		}
		flat, e := d.currentFlat()
		if e != nil {
			err = e
			return
		}
		out, e := os.OpenFile(flat, os.O_RDWR|os.O_TRUNC, 0)
		if e != nil {
			err = e
			return
		}
		defer out.Close()
		if e := copySparseFile(out, in, fi.Size()); e != nil {
			err = e
			return
		}
		if e := out.Truncate(capacity); e != nil {
			err = e
			return
		}
		d.capacity = capacity
		if e := d.writeDescriptors(hwVersion(st.vm)); e != nil {
			err = e
			return
		}
		st.record(d, 0, capacity)
		st.applyBackings()
		st.publish(internalCtx())
	})
	return err
}

func (s *front) hookResetCBT(r *http.Request, st *vmState) (err error) {
	simulator.Map.WithLock(st.vm, func() {
		d, e := hookDiskOf(st, r)
		if e != nil {
			err = e
			return
		}
		d.cbtID = newCBTID()
		d.areas = nil
		d.epochMin = st.seq
		st.applyBackings()
		st.publish(internalCtx())
	})
	return err
}

func (s *front) hookRead(w http.ResponseWriter, r *http.Request, st *vmState) {
	var flat string
	var err error
	simulator.Map.WithLock(st.vm, func() {
		d, e := hookDiskOf(st, r)
		if e != nil {
			err = e
			return
		}
		flat, err = d.currentFlat()
	})
	if err != nil {
		writeHookError(w, err)
		return
	}
	f, err := os.Open(flat)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	defer f.Close()
	fi, _ := f.Stat()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
}

// hookAddDisk adds a disk through a real ReconfigVM_Task (so the simulator's bookkeeping
// runs), on the controller of the first disk at its next free unit number.
func (s *front) hookAddDisk(r *http.Request, st *vmState) (int32, error) {
	capacity, perr := strconv.ParseInt(r.URL.Query().Get("capacity"), 10, 64)
	if perr != nil || capacity <= 0 {
		return 0, hookErr(http.StatusBadRequest, "capacity must be a positive number of bytes")
	}
	capacity = roundUp(capacity, kib)

	var spec types.VirtualMachineConfigSpec
	before := map[int32]bool{}
	var err error
	simulator.Map.WithLock(st.vm, func() {
		vm := st.vm
		var controller int32 = -1
		var bus int32
		for _, dev := range diskDevices(vm) {
			before[dev.Key] = true
			if controller < 0 {
				controller = dev.ControllerKey
			}
		}
		if controller < 0 {
			for _, dev := range vm.Config.Hardware.Device {
				if _, ok := dev.(types.BaseVirtualSCSIController); ok {
					controller = dev.GetVirtualDevice().Key
					break
				}
			}
		}
		if controller < 0 {
			err = hookErr(http.StatusConflict, "%s has no disk controller", vm.Name)
			return
		}
		for _, dev := range vm.Config.Hardware.Device {
			if c, ok := dev.(types.BaseVirtualController); ok && dev.GetVirtualDevice().Key == controller {
				bus = c.GetVirtualController().BusNumber
			}
		}
		used := map[int32]bool{7: true} // unit 7 is the SCSI controller itself
		for _, dev := range vm.Config.Hardware.Device {
			v := dev.GetVirtualDevice()
			if v.ControllerKey == controller && v.UnitNumber != nil {
				used[*v.UnitNumber] = true
			}
		}
		unit := int32(-1)
		for u := int32(0); u < 16; u++ {
			if !used[u] {
				unit = u
				break
			}
		}
		if unit < 0 {
			err = hookErr(http.StatusConflict, "no free unit on controller %d", controller)
			return
		}
		var p object.DatastorePath
		p.FromString(vm.Config.Files.VmPathName)
		dir := path.Dir(p.Path)
		var fileName string
		for n := 1; ; n++ {
			fileName = fmt.Sprintf("[%s] %s/%s_%d.vmdk", p.Datastore, dir, vm.Name, n)
			lp, e := localPath(fileName)
			if e != nil {
				err = e
				return
			}
			if _, e := os.Stat(lp); os.IsNotExist(e) {
				if _, e := os.Stat(flatName(lp)); os.IsNotExist(e) {
					break
				}
			}
		}
		dev := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           2000 + 16*bus + unit, // as vSphere numbers disks
				ControllerKey: controller,
				UnitNumber:    &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: fileName, Datastore: datastoreRef(fileName)},
					DiskMode:                     string(types.VirtualDiskModePersistent),
					ThinProvisioned:              types.NewBool(true),
					Uuid:                         newDiskUUID(),
				},
			},
			CapacityInKB:    capacity / kib,
			CapacityInBytes: capacity,
		}
		spec.DeviceChange = []types.BaseVirtualDeviceConfigSpec{&types.VirtualDeviceConfigSpec{
			Operation:     types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
			Device:        dev,
		}}
	})
	if err != nil {
		return 0, err
	}
	ctx := context.Background()
	task, err := object.NewVirtualMachine(s.client, st.vm.Self).Reconfigure(ctx, spec)
	if err != nil {
		return 0, err
	}
	if err := task.Wait(ctx); err != nil {
		return 0, err
	}
	var key int32
	simulator.Map.WithLock(st.vm, func() {
		for _, dev := range diskDevices(st.vm) {
			if !before[dev.Key] {
				key = dev.Key
			}
		}
	})
	if key == 0 {
		return 0, fmt.Errorf("the new disk did not appear")
	}
	return key, nil
}
