package main

// The simulator's VirtualMachine and VirtualMachineSnapshot, wrapped (embedded by value,
// as the property collector requires) to give snapshots real data semantics and to add
// QueryChangedDiskAreas.

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type lbVM struct {
	simulator.VirtualMachine
}

type lbSnapshot struct {
	simulator.VirtualMachineSnapshot
}

// maxChangedBytes bounds the window one QueryChangedDiskAreas call answers for.
var maxChangedBytes = 64 * mib

func fileFault(file, msg string) *soap.Fault {
	return simulator.Fault(msg, &types.FileFault{File: file})
}

func invalidArgument(prop, msg string) *soap.Fault {
	return simulator.Fault(msg, &types.InvalidArgument{InvalidProperty: prop})
}

// newVMTask creates a task whose entity is the VM (pyvmomi rejects a task whose entity is a
// VirtualMachineSnapshot: that is not a ManagedEntity), named like vCenter names it.
func newVMTask(vm *lbVM, name, descriptionID string, run func(*simulator.Task) (types.AnyType, types.BaseMethodFault)) *simulator.Task {
	task := simulator.CreateTask(vm, name, run)
	task.Info.EntityName = vm.Name
	if descriptionID != "" {
		task.Info.DescriptionId = descriptionID
	}
	return task
}

// --- snapshots -------------------------------------------------------------------------

func (vm *lbVM) CreateSnapshotTask(ctx *simulator.Context, req *types.CreateSnapshot_Task) soap.HasFault {
	task := newVMTask(vm, "createSnapshotTask", "VirtualMachine.createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		st := stateOf(vm.Self)
		if st == nil {
			return nil, &types.NotSupported{}
		}
		ref, err := st.createSnapshot(ctx, req)
		if err != nil {
			logf("create snapshot of %s: %v", vm.Name, err)
			return nil, &types.FileFault{File: err.Error()}
		}
		return ref, nil
	})
	return &methods.CreateSnapshot_TaskBody{Res: &types.CreateSnapshot_TaskResponse{Returnval: task.Run()}}
}

func (st *vmState) createSnapshot(ctx *simulator.Context, req *types.CreateSnapshot_Task) (types.ManagedObjectReference, error) {
	vm := st.vm
	if st.cbtEnabled && !st.cbtActive {
		// Tracking starts with the first snapshot after enabling, like the stun/unstun
		// cycle vSphere needs.
		st.cbtActive = true
		if st.seq < 1 {
			st.seq = 1
		}
		for _, d := range st.disks {
			d.areas = nil
			d.epochMin = st.seq
		}
	}
	seq := 0
	if st.cbtActive {
		seq = st.seq
		st.seq++
	}

	snap := &lbSnapshot{}
	snap.Self.Type = "VirtualMachineSnapshot"
	snap.Vm = vm.Self
	snap.Config = *vm.Config
	snap.Config.Hardware.Device = deepCopyDevices(vm.Config.Hardware.Device)
	simulator.Map.Put(snap)
	ref := snap.Self

	rec := &snapRec{
		ref:       ref,
		obj:       snap,
		seq:       seq,
		changeIDs: map[int32]string{},
		cbtIDs:    map[int32]string{},
	}
	id := atomic.AddInt32(&st.nextSnapID, 1)
	rec.tree = types.VirtualMachineSnapshotTree{
		Snapshot:        ref,
		Vm:              vm.Self,
		Name:            req.Name,
		Description:     req.Description,
		Id:              id,
		CreateTime:      time.Now().UTC(),
		State:           vm.Runtime.PowerState,
		Quiesced:        req.Quiesce,
		ReplaySupported: types.NewBool(false),
	}

	for _, d := range st.disks {
		cur := d.current()
		name, err := nextDeltaName(d)
		if err != nil {
			return ref, err
		}
		src, err := d.currentFlat()
		if err != nil {
			return ref, err
		}
		dst, err := localPath(flatName(name))
		if err != nil {
			return ref, err
		}
		if err := copySparse(dst, src, d.capacity); err != nil {
			return ref, err
		}
		frozen := ref
		cur.snap = &frozen
		d.chain = append(d.chain, link{file: name, cid: randomCID()})
		if err := d.writeDescriptors(hwVersion(vm)); err != nil {
			return ref, err
		}
		_ = os.Chmod(src, 0o444) // the frozen base is read-only
		if st.cbtActive {
			rec.changeIDs[d.key] = d.cbtID + "/" + strconv.Itoa(seq)
		}
		rec.cbtIDs[d.key] = d.cbtID
	}

	// A (memory-less) .vmsn file, as vSphere writes one per snapshot.
	if vmx, err := localPath(vm.Config.Files.VmPathName); err == nil {
		rec.vmsn = path.Join(path.Dir(vmx), fmt.Sprintf("%s-Snapshot%d.vmsn", vm.Name, id))
		_ = os.WriteFile(rec.vmsn, nil, 0o644)
	}

	st.snaps = append(st.snaps, rec)
	st.applyBackings()
	st.publish(ctx)
	return ref, nil
}

// removeSnapshot consolidates snapshot k: for every disk the file written after it (the
// next snapshot's frozen file or the VM's current delta) is merged back into the file it
// froze, under that file's name.
func (st *vmState) removeSnapshot(k int) error {
	rec := st.snaps[k]
	for _, d := range st.disks {
		i := d.linkOf(rec.ref)
		if i < 0 || i+1 >= len(d.chain) {
			continue
		}
		child := d.chain[i+1]
		from, err := d.flatPath(i + 1)
		if err != nil {
			return err
		}
		to, err := d.flatPath(i)
		if err != nil {
			return err
		}
		_ = os.Chmod(from, 0o644)
		if err := os.Rename(from, to); err != nil {
			return err
		}
		if desc, err := localPath(child.file); err == nil {
			_ = os.Remove(desc)
		}
		d.chain[i].snap = child.snap
		if child.snap != nil {
			_ = os.Chmod(to, 0o444)
		} else {
			_ = os.Chmod(to, 0o644)
		}
		d.chain = append(d.chain[:i+1], d.chain[i+2:]...)
		if err := d.writeDescriptors(hwVersion(st.vm)); err != nil {
			return err
		}
	}
	if rec.vmsn != "" {
		_ = os.Remove(rec.vmsn)
	}
	st.snaps = append(st.snaps[:k], st.snaps[k+1:]...)
	simulator.Map.Remove(rec.ref)
	return nil
}

func (st *vmState) snapIndex(ref types.ManagedObjectReference) int {
	for i, rec := range st.snaps {
		if rec.ref == ref {
			return i
		}
	}
	return -1
}

func (s *lbSnapshot) RemoveSnapshotTask(ctx *simulator.Context, req *types.RemoveSnapshot_Task) soap.HasFault {
	st := stateOf(s.Vm)
	if st == nil {
		return &methods.RemoveSnapshot_TaskBody{Fault_: simulator.Fault("", &types.ManagedObjectNotFound{Obj: s.Vm})}
	}
	vm := st.vm
	self := s.Self
	task := newVMTask(vm, "removeSnapshotTask", "vm.Snapshot.remove", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		var fault types.BaseMethodFault
		ctx.WithLock(vm, func() {
			k := st.snapIndex(self)
			if k < 0 {
				fault = &types.ManagedObjectNotFound{Obj: self}
				return
			}
			last := k
			if req.RemoveChildren {
				last = len(st.snaps) - 1
			}
			for i := last; i >= k; i-- {
				if err := st.removeSnapshot(i); err != nil {
					logf("remove snapshot of %s: %v", vm.Name, err)
					fault = &types.FileFault{File: err.Error()}
					break
				}
			}
			st.applyBackings()
			st.publish(ctx)
		})
		return nil, fault
	})
	return &methods.RemoveSnapshot_TaskBody{Res: &types.RemoveSnapshot_TaskResponse{Returnval: task.Run()}}
}

func (vm *lbVM) RemoveAllSnapshotsTask(ctx *simulator.Context, req *types.RemoveAllSnapshots_Task) soap.HasFault {
	task := newVMTask(vm, "removeAllSnapshotsTask", "VirtualMachine.removeAllSnapshots", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		st := stateOf(vm.Self)
		if st == nil {
			return nil, nil
		}
		for i := len(st.snaps) - 1; i >= 0; i-- {
			if err := st.removeSnapshot(i); err != nil {
				logf("remove snapshots of %s: %v", vm.Name, err)
				return nil, &types.FileFault{File: err.Error()}
			}
		}
		st.applyBackings()
		st.publish(ctx)
		return nil, nil
	})
	return &methods.RemoveAllSnapshots_TaskBody{Res: &types.RemoveAllSnapshots_TaskResponse{Returnval: task.Run()}}
}

func notSupportedTask(vm *lbVM, name string) types.ManagedObjectReference {
	task := newVMTask(vm, name, "", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.NotSupported{}
	})
	return task.Run()
}

// Reverting is not modelled (snapshots stay a single line); say so rather than pretend.
func (vm *lbVM) RevertToCurrentSnapshotTask(req *types.RevertToCurrentSnapshot_Task) soap.HasFault {
	return &methods.RevertToCurrentSnapshot_TaskBody{Res: &types.RevertToCurrentSnapshot_TaskResponse{Returnval: notSupportedTask(vm, "revertToCurrentSnapshotTask")}}
}

func (s *lbSnapshot) RevertToSnapshotTask(req *types.RevertToSnapshot_Task) soap.HasFault {
	st := stateOf(s.Vm)
	if st == nil {
		return &methods.RevertToSnapshot_TaskBody{Fault_: simulator.Fault("", &types.NotSupported{})}
	}
	return &methods.RevertToSnapshot_TaskBody{Res: &types.RevertToSnapshot_TaskResponse{Returnval: notSupportedTask(st.vm, "revertToSnapshotTask")}}
}

// --- reconfigure -----------------------------------------------------------------------

func (vm *lbVM) ReconfigVMTask(ctx *simulator.Context, req *types.ReconfigVM_Task) soap.HasFault {
	res := vm.VirtualMachine.ReconfigVMTask(ctx, req)
	body, ok := res.(*methods.ReconfigVM_TaskBody)
	if !ok || body.Res == nil {
		return res
	}
	task, ok := simulator.Map.Get(body.Res.Returnval).(*simulator.Task)
	if !ok || task.Info.State != types.TaskInfoStateSuccess {
		return res
	}
	if st := stateOf(vm.Self); st != nil {
		if err := st.sync(); err != nil {
			logf("reconfigure %s: %v", vm.Name, err)
			task.Info.State = types.TaskInfoStateError
			task.Info.Error = &types.LocalizedMethodFault{Fault: &types.FileFault{File: err.Error()}, LocalizedMessage: err.Error()}
		}
		st.publish(ctx)
	}
	return res
}

// --- changed block tracking ------------------------------------------------------------

func (vm *lbVM) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	st := stateOf(vm.Self)
	if st == nil {
		body.Fault_ = simulator.Fault("no disk state for this virtual machine", &types.NotSupported{})
		return body
	}
	info, fault := st.queryChangedDiskAreas(req)
	if fault != nil {
		body.Fault_ = fault
		return body
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}

func parseChangeID(c string) (id string, seq int, ok bool) {
	i := strings.LastIndex(c, "/")
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(c[i+1:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return c[:i], n, true
}

func (st *vmState) queryChangedDiskAreas(req *types.QueryChangedDiskAreas) (types.DiskChangeInfo, *soap.Fault) {
	var none types.DiskChangeInfo
	d := st.disk(req.DeviceKey)
	if d == nil {
		return none, invalidArgument("deviceKey", fmt.Sprintf("no virtual disk with device key %d", req.DeviceKey))
	}
	if !st.cbtEnabled {
		return none, fileFault(d.current().file, "Change tracking is not enabled for this virtual machine")
	}
	if !st.cbtActive {
		return none, fileFault(d.current().file, "Change tracking is not active yet for this disk: it starts with the next snapshot")
	}

	// What the query is about: a snapshot's frozen file, or (no snapshot) the current disk.
	file := d.current().file
	upTo := st.seq
	cbtID := d.cbtID
	if req.Snapshot != nil {
		k := st.snapIndex(*req.Snapshot)
		if k < 0 {
			return none, simulator.Fault("snapshot not found", &types.ManagedObjectNotFound{Obj: *req.Snapshot})
		}
		rec := st.snaps[k]
		i := d.linkOf(rec.ref)
		if i < 0 {
			return none, invalidArgument("deviceKey", fmt.Sprintf("virtual disk %d is not part of snapshot %s", d.key, rec.ref.Value))
		}
		if rec.changeIDs[d.key] == "" {
			return none, fileFault(d.chain[i].file, "Change tracking was not active for this disk when the snapshot was taken")
		}
		file = d.chain[i].file
		upTo = rec.seq
		cbtID = rec.cbtIDs[d.key]
	}

	if req.StartOffset < 0 || req.StartOffset >= d.capacity {
		return none, invalidArgument("startOffset", fmt.Sprintf("startOffset %d is outside the disk (capacity %d)", req.StartOffset, d.capacity))
	}
	window := extent{req.StartOffset, minInt64(d.capacity, req.StartOffset+maxChangedBytes)}
	info := types.DiskChangeInfo{StartOffset: window.start, Length: window.end - window.start}

	var areas []extent
	if req.ChangeId == "*" {
		p, err := localPath(flatName(file))
		if err != nil {
			return none, fileFault(file, err.Error())
		}
		areas, err = allocatedExtents(p, window)
		if err != nil {
			return none, fileFault(file, err.Error())
		}
	} else {
		id, since, ok := parseChangeID(req.ChangeId)
		if !ok || id != d.cbtID || cbtID != d.cbtID || since < d.epochMin || since > upTo {
			return none, invalidArgument("changeId", fmt.Sprintf("changeId %q is not valid for this disk (reset, unknown or later than the snapshot)", req.ChangeId))
		}
		for _, a := range d.areas {
			if a.seq > since && a.seq <= upTo {
				if x, ok := clipAligned(a.extent, window); ok {
					areas = append(areas, x)
				}
			}
		}
		areas = mergeExtents(areas)
	}
	for _, a := range areas {
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: a.start, Length: a.end - a.start})
	}
	return info, nil
}
