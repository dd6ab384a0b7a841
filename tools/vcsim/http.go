package main

// The HTTP front: SOAP (the stock handler, guarded), datastore file access under /folder
// like vCenter, and the test-only hooks under /lifeboat-sim/.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"io/ioutil"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

const sessionCookie = "vmware_soap_session"

type front struct {
	svc      *simulator.Service
	mux      http.Handler
	client   *vim25.Client // in-process client (internal session)
	username string
	password string
	esx      bool
	sessions sync.Map // session keys seen in Set-Cookie (used when SessionIsActive is unavailable)
}

func (s *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/lifeboat-sim/"):
		s.serveHooks(w, r)
	case strings.HasPrefix(r.URL.Path, "/folder/"):
		s.serveFolder(w, r)
	default:
		s.serveSOAP(w, r)
	}
}

// --- SOAP ------------------------------------------------------------------------------

const soapEnvelopeStart = `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
	`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`
const soapEnvelopeEnd = `</soapenv:Body></soapenv:Envelope>`

type headerWatch struct {
	http.ResponseWriter
	wrote bool
}

func (h *headerWatch) WriteHeader(code int) { h.wrote = true; h.ResponseWriter.WriteHeader(code) }
func (h *headerWatch) Write(b []byte) (int, error) {
	h.wrote = true
	return h.ResponseWriter.Write(b)
}

func soapMethod(body []byte) string {
	m, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		return ""
	}
	return m.Name
}

// serveSOAP runs the stock SOAP handler. Stock 0.24.2 panics in Fetch (pyvmomi's property
// accessor, e.g. vm.snapshot) when the property is unset; vCenter answers an empty
// FetchResponse then, and so do we. Any other panic becomes a SystemError fault instead of
// a dropped connection.
func (s *front) serveSOAP(w http.ResponseWriter, r *http.Request) {
	var body []byte
	if r.Body != nil && r.Method == http.MethodPost {
		b, err := ioutil.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = b
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
	}
	hw := &headerWatch{ResponseWriter: w}
	defer func() {
		p := recover()
		if p == nil {
			s.noteSessions(w)
			return
		}
		name := soapMethod(body)
		if hw.wrote {
			logf("panic in %s after the response started: %v", name, p)
			return
		}
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		if name == "Fetch" && strings.Contains(fmt.Sprint(p), "index out of range") {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, soapEnvelopeStart+`<FetchResponse xmlns="urn:vim25"></FetchResponse>`+soapEnvelopeEnd)
			return
		}
		logf("panic in %s: %v\n%s", name, p, debug.Stack())
		var msg bytes.Buffer
		_ = xml.EscapeText(&msg, []byte(fmt.Sprintf("vcsim internal error in %s: %v", name, p)))
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, soapEnvelopeStart+`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>`+
			msg.String()+`</faultstring><detail><SystemErrorFault xmlns="urn:vim25" xsi:type="SystemError"><reason>`+
			msg.String()+`</reason></SystemErrorFault></detail></soapenv:Fault>`+soapEnvelopeEnd)
	}()
	s.mux.ServeHTTP(hw, r)
}

func (s *front) noteSessions(w http.ResponseWriter) {
	for _, c := range (&http.Response{Header: w.Header()}).Cookies() {
		if c.Name == sessionCookie {
			s.sessions.Store(c.Value, true)
		}
	}
}

// authorized: a live SOAP session cookie (as pyvmomi's stub holds after login) or HTTP
// basic auth with the configured credentials, as vCenter accepts for /folder.
func (s *front) authorized(r *http.Request) bool {
	if u, p, ok := r.BasicAuth(); ok {
		return u == s.username && p == s.password
	}
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return false
	}
	id := strings.Trim(c.Value, `"`)
	if !s.esx {
		ctx := &simulator.Context{Context: context.Background(), Map: simulator.Map}
		res := simulator.Map.SessionManager().SessionIsActive(ctx, &types.SessionIsActive{SessionID: id, UserName: s.username})
		if b, ok := res.(*methods.SessionIsActiveBody); ok && b.Res != nil {
			return b.Res.Returnval
		}
	}
	_, ok := s.sessions.Load(id)
	return ok
}

// --- datastore files (/folder) -------------------------------------------------------------

func datacenterOf(ref types.ManagedObjectReference) string {
	for i := 0; i < 64; i++ {
		obj := simulator.Map.Get(ref)
		if obj == nil {
			return ""
		}
		if dc, ok := obj.(*simulator.Datacenter); ok {
			return dc.Name
		}
		e, ok := obj.(mo.Entity)
		if !ok || e.Entity().Parent == nil {
			return ""
		}
		ref = *e.Entity().Parent
	}
	return ""
}

func (s *front) folderDatastore(dcPath, dsName string) *simulator.Datastore {
	dcName := path.Base(strings.Trim(dcPath, "/")) // dcPath may include folders: "F0/DC0"
	for _, e := range simulator.Map.All("Datastore") {
		ds, ok := e.(*simulator.Datastore)
		if !ok || ds.Name != dsName {
			continue
		}
		if dcPath == "" || datacenterOf(ds.Self) == dcName {
			return ds
		}
	}
	return nil
}

func (s *front) serveFolder(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		http.Error(w, "401 Unauthorized: no valid session", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	ds := s.folderDatastore(q.Get("dcPath"), q.Get("dsName"))
	if ds == nil {
		http.Error(w, "404 Not Found: no such datastore", http.StatusNotFound)
		return
	}
	rel := path.Clean("/" + strings.TrimPrefix(r.URL.Path, "/folder/"))
	local := filepath.Join(ds.Info.GetDatastoreInfo().Url, filepath.FromSlash(rel))

	switch r.Method {
	case http.MethodGet, http.MethodHead:
		f, err := os.Open(local)
		if err != nil {
			http.Error(w, "404 Not Found", http.StatusNotFound)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || fi.IsDir() {
			http.Error(w, "404 Not Found", http.StatusNotFound)
			return
		}
		w.Header().Set("Accept-Ranges", "bytes")
		if strings.HasSuffix(local, ".vmdk") && !strings.HasSuffix(local, "-flat.vmdk") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		http.ServeContent(w, r, fi.Name(), fi.ModTime(), f) // Range -> 206 + Content-Range
	case http.MethodPut, http.MethodPost:
		s.svc.ServeDatastore(w, r) // upload, as the stock simulator does it
	default:
		http.Error(w, "405 Method Not Allowed", http.StatusMethodNotAllowed)
	}
}

// --- test hooks (/lifeboat-sim/) -----------------------------------------------------------

type hookError struct {
	status int
	msg    string
}

func (e *hookError) Error() string { return e.msg }

func hookErr(status int, format string, a ...interface{}) *hookError {
	return &hookError{status, fmt.Sprintf(format, a...)}
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
		status := http.StatusInternalServerError
		if he, ok := err.(*hookError); ok {
			status = he.status
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
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
		status := http.StatusInternalServerError
		if he, ok := err.(*hookError); ok {
			status = he.status
		}
		writeJSON(w, status, map[string]string{"error": err.Error()})
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
