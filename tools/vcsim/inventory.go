package main

// The inventory: datastores whose contents are real folders under -dir, and VMs with
// realistic hardware (guest OS, firmware, controllers, NICs on "VM Network" and on DVS
// portgroups, a real disk each).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type profile struct {
	guestID    string
	guestName  string
	family     string
	controller string
	nic        string
	firmware   string
	cpus       int32
	memoryMB   int64
}

var profiles = []profile{
	{"ubuntu64Guest", "Ubuntu Linux (64-bit)", "linuxGuest", "pvscsi", "vmxnet3", "efi", 2, 2048},
	{"rhel7_64Guest", "Red Hat Enterprise Linux 7 (64-bit)", "linuxGuest", "lsilogic", "vmxnet3", "bios", 1, 1024},
	{"windows9Server64Guest", "Microsoft Windows Server 2016 or later (64-bit)", "windowsGuest", "lsilogic-sas", "e1000e", "efi", 4, 4096},
}

func datacenters() []*simulator.Datacenter {
	var out []*simulator.Datacenter
	for _, e := range simulator.Map.All("Datacenter") {
		if dc, ok := e.(*simulator.Datacenter); ok {
			out = append(out, dc)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func hostsOf(dc *simulator.Datacenter) []types.ManagedObjectReference {
	var out []types.ManagedObjectReference
	for _, e := range simulator.Map.All("HostSystem") {
		h := e.(*simulator.HostSystem)
		if datacenterOf(h.Self) == dc.Name {
			out = append(out, h.Self)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return simulator.Map.Get(out[i]).(*simulator.HostSystem).Name < simulator.Map.Get(out[j]).(*simulator.HostSystem).Name
	})
	return out
}

// createDatastores creates n local datastores per datacenter, each a folder root/<name>.
// The datastore is created with a path relative to root (so its moref reads
// "LocalDS_0@folder-5" rather than embedding a local path), then given its absolute path.
func createDatastores(ctx context.Context, c *vim25.Client, root string, n int) error {
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	defer func() { _ = os.Chdir(cwd) }()

	for i, dc := range datacenters() {
		for k := 0; k < n; k++ {
			name := fmt.Sprintf("LocalDS_%d", k)
			if i > 0 {
				name = dc.Name + "_" + name
			}
			if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
				return err
			}
			for _, h := range hostsOf(dc) {
				host := object.NewHostSystem(c, h)
				dss, err := host.ConfigManager().DatastoreSystem(ctx)
				if err != nil {
					return err
				}
				if _, err := dss.CreateLocalDatastore(ctx, name, name); err != nil {
					return fmt.Errorf("datastore %s on %s: %v", name, h.Value, err)
				}
			}
		}
	}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		abs := filepath.Join(root, ds.Name)
		info := ds.Info.GetDatastoreInfo()
		info.Url = abs
		if li, ok := ds.Info.(*types.LocalDatastoreInfo); ok {
			li.Path = abs
		}
		ds.Summary.Url = abs
	}
	return nil
}

type computeResource struct {
	name    string
	pool    types.ManagedObjectReference
	hosts   []types.ManagedObjectReference
	cluster bool
}

func computeResources(dc *simulator.Datacenter) []computeResource {
	var out []computeResource
	var walk func(ref types.ManagedObjectReference)
	walk = func(ref types.ManagedObjectReference) {
		switch o := simulator.Map.Get(ref).(type) {
		case *simulator.Folder:
			for _, c := range o.ChildEntity {
				walk(c)
			}
		case *mo.ComputeResource:
			if o.ResourcePool != nil {
				out = append(out, computeResource{o.Name, *o.ResourcePool, o.Host, false})
			}
		case *simulator.ClusterComputeResource:
			if o.ResourcePool != nil {
				out = append(out, computeResource{o.Name, *o.ResourcePool, o.Host, true})
			}
		}
	}
	walk(dc.HostFolder)
	return out
}

func datastoreNames(dc *simulator.Datacenter) []string {
	var out []string
	for _, ref := range dc.Datastore {
		if ds, ok := simulator.Map.Get(ref).(*simulator.Datastore); ok {
			out = append(out, ds.Name)
		}
	}
	sort.Strings(out)
	return out
}

func portgroupBacking(ctx context.Context, c *vim25.Client, dc *simulator.Datacenter) types.BaseVirtualDeviceBackingInfo {
	var refs []types.ManagedObjectReference
	for _, ref := range dc.Network {
		if ref.Type != "DistributedVirtualPortgroup" {
			continue
		}
		pg, ok := simulator.Map.Get(ref).(*simulator.DistributedVirtualPortgroup)
		if !ok || strings.Contains(pg.Name, "DVUplinks") {
			continue
		}
		refs = append(refs, ref)
	}
	sort.Slice(refs, func(i, j int) bool {
		return simulator.Map.Get(refs[i]).(*simulator.DistributedVirtualPortgroup).Name <
			simulator.Map.Get(refs[j]).(*simulator.DistributedVirtualPortgroup).Name
	})
	if len(refs) == 0 {
		return nil
	}
	b, err := object.NewDistributedVirtualPortgroup(c, refs[0]).EthernetCardBackingInfo(ctx)
	if err != nil {
		logf("portgroup backing: %v", err)
		return nil
	}
	return b
}

// createVMs creates perPool VMs in every resource pool (the standalone hosts' and each
// cluster's root pool), named like vcsim names them (DC0_H0_VM0, DC0_C0_RP0_VM0).
func createVMs(ctx context.Context, c *vim25.Client, perPool int, diskSize int64, esx bool) error {
	n := 0
	for _, dc := range datacenters() {
		folders, err := object.NewDatacenter(c, dc.Self).Folders(ctx)
		if err != nil {
			return err
		}
		dsNames := datastoreNames(dc)
		if len(dsNames) == 0 {
			return fmt.Errorf("datacenter %s has no datastore", dc.Name)
		}
		vmNetwork := &types.VirtualEthernetCardNetworkBackingInfo{
			VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: "VM Network"},
		}
		dvpg := portgroupBacking(ctx, c, dc)
		for _, cr := range computeResources(dc) {
			prefix := cr.name
			if cr.cluster {
				prefix += "_RP0"
			}
			if esx {
				prefix = "ha-host"
			}
			for i := 0; i < perPool; i++ {
				if len(cr.hosts) == 0 {
					break
				}
				var backing types.BaseVirtualDeviceBackingInfo = vmNetwork
				if n%2 == 1 && dvpg != nil {
					backing = dvpg
				}
				name := fmt.Sprintf("%s_VM%d", prefix, i)
				err := createVM(ctx, c, vmSpec{
					name:     name,
					folder:   folders.VmFolder,
					pool:     cr.pool,
					host:     cr.hosts[i%len(cr.hosts)],
					ds:       dsNames[n%len(dsNames)],
					profile:  profiles[n%len(profiles)],
					backing:  backing,
					diskSize: diskSize,
					powerOn:  n%4 != 3,
					ip:       fmt.Sprintf("10.0.%d.%d", n/240, 10+n%240),
				})
				if err != nil {
					return fmt.Errorf("create %s: %v", name, err)
				}
				n++
			}
		}
	}
	return nil
}

type vmSpec struct {
	name     string
	folder   *object.Folder
	pool     types.ManagedObjectReference
	host     types.ManagedObjectReference
	ds       string
	profile  profile
	backing  types.BaseVirtualDeviceBackingInfo
	diskSize int64
	powerOn  bool
	ip       string
}

func createVM(ctx context.Context, c *vim25.Client, s vmSpec) error {
	p := s.profile
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController(p.controller)
	if err != nil {
		return err
	}
	scsi.GetVirtualDevice().Key = 1000 // vSphere's keys: SCSI 1000+, CD-ROM 3000+, disks 2000+, NICs 4000+
	devices = append(devices, scsi)
	dsObj := findDatastoreByName(s.ds)
	if dsObj == nil {
		return fmt.Errorf("datastore %s not found", s.ds)
	}
	disk := devices.CreateDisk(scsi.(types.BaseVirtualController), dsObj.Self, fmt.Sprintf("[%s] %s/%s.vmdk", s.ds, s.name, s.name))
	disk.Key = 2000
	disk.CapacityInKB = s.diskSize / kib
	disk.CapacityInBytes = s.diskSize
	disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).Uuid = newDiskUUID()
	unit := int32(0)
	cdrom := &types.VirtualCdrom{
		VirtualDevice: types.VirtualDevice{
			Key:           3000,
			ControllerKey: 200, // the default "IDE 0"
			UnitNumber:    &unit,
			Backing: &types.VirtualCdromRemotePassthroughBackingInfo{
				VirtualDeviceRemoteDeviceBackingInfo: types.VirtualDeviceRemoteDeviceBackingInfo{DeviceName: "", UseAutoDetect: types.NewBool(false)},
			},
			Connectable: &types.VirtualDeviceConnectInfo{AllowGuestControl: true, StartConnected: false, Connected: false},
		},
	}
	nic, err := devices.CreateEthernetCard(p.nic, s.backing)
	if err != nil {
		return err
	}
	nic.GetVirtualDevice().Key = 4000
	devices = append(devices, disk, cdrom, nic)
	change, err := devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return err
	}
	spec := types.VirtualMachineConfigSpec{
		Name:              s.name,
		GuestId:           p.guestID,
		NumCPUs:           p.cpus,
		NumCoresPerSocket: 1,
		MemoryMB:          p.memoryMB,
		Firmware:          p.firmware,
		Files:             &types.VirtualMachineFileInfo{VmPathName: "[" + s.ds + "]"},
		DeviceChange:      change,
	}
	pool := object.NewResourcePool(c, s.pool)
	host := object.NewHostSystem(c, s.host)
	task, err := s.folder.CreateVM(ctx, spec, pool, host)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return err
	}
	ref := info.Result.(types.ManagedObjectReference)
	if s.powerOn {
		t, err := object.NewVirtualMachine(c, ref).PowerOn(ctx)
		if err != nil {
			return err
		}
		if err := t.Wait(ctx); err != nil {
			return err
		}
	}

	stock := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	vm := &lbVM{VirtualMachine: *stock}
	simulator.Map.Put(vm)
	setGuest(vm, p, s.ip)

	st := &vmState{vm: vm, seq: 1}
	registerState(st)
	for _, dev := range diskDevices(vm) {
		if _, err := st.initDisk(dev); err != nil {
			return err
		}
	}
	st.applyBackings()
	st.publish(internalCtx())
	return nil
}

func setGuest(vm *lbVM, p profile, ip string) {
	vm.Config.GuestFullName = p.guestName
	vm.Summary.Config.GuestFullName = p.guestName
	g := vm.Guest
	g.GuestId = p.guestID
	g.GuestFullName = p.guestName
	g.GuestFamily = p.family
	g.ToolsVersion = "11365"
	if vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
		g.GuestState = "running"
		g.ToolsStatus = types.VirtualMachineToolsStatusToolsOk
		g.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)
		g.ToolsVersionStatus2 = string(types.VirtualMachineToolsVersionStatusGuestToolsCurrent)
		g.HostName = strings.ToLower(strings.ReplaceAll(vm.Name, "_", "-"))
		g.IpAddress = ip
		for i := range g.Net {
			if i == 0 {
				g.Net[i].IpAddress = []string{ip}
			}
		}
	} else {
		g.GuestState = "notRunning"
		g.ToolsStatus = types.VirtualMachineToolsStatusToolsNotRunning
		g.ToolsRunningStatus = string(types.VirtualMachineToolsRunningStatusGuestToolsNotRunning)
		g.ToolsVersionStatus2 = string(types.VirtualMachineToolsVersionStatusGuestToolsCurrent)
	}
	vm.Summary.Guest = &types.VirtualMachineGuestSummary{
		GuestId:             g.GuestId,
		GuestFullName:       g.GuestFullName,
		ToolsStatus:         g.ToolsStatus,
		ToolsVersionStatus2: g.ToolsVersionStatus2,
		ToolsRunningStatus:  g.ToolsRunningStatus,
		HostName:            g.HostName,
		IpAddress:           g.IpAddress,
	}
}
