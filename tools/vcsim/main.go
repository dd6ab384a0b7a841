// Command vcsim is Lifeboat's vCenter simulator: govmomi's simulator (Debian's 0.24.2)
// extended with real disk files, snapshots with real data semantics, changed block
// tracking (QueryChangedDiskAreas), vCenter-like datastore file access and test hooks.
// pyvmomi talks to it over HTTPS exactly as to vCenter. See README.md.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

var defaultDiskSize = 8 * mib

func logf(format string, a ...interface{}) { log.Printf(format, a...) }

func fatalf(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "vcsim: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "listen address (port 0 picks a free port)")
	dc := flag.Int("dc", 1, "datacenters")
	cluster := flag.Int("cluster", 1, "clusters per datacenter")
	hosts := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	vms := flag.Int("vm", 2, "VMs per resource pool")
	ds := flag.Int("ds", 1, "datastores per datacenter")
	pg := flag.Int("pg", 2, "distributed portgroups per datacenter")
	esx := flag.Bool("esx", false, "simulate a standalone ESX host instead of vCenter")
	useTLS := flag.Bool("tls", true, "serve https")
	dir := flag.String("dir", "", "folder holding the datastores' contents (default: a temporary folder removed on exit)")
	diskSize := flag.Int64("disk-size", 8*mib, "size in bytes of each VM's initial disk (sparse)")
	tlsCert := flag.String("tlscert", "", "PEM certificate to serve https with (default: the simulator's own)")
	tlsKey := flag.String("tlskey", "", "PEM private key for -tlscert")
	username := flag.String("username", "user", "the only user name that can log in")
	password := flag.String("password", "pass", "the only password that can log in")
	maxChanged := flag.Int64("max-changed-bytes", 64*mib, "bytes of a disk one QueryChangedDiskAreas call covers at most")
	trace := flag.Bool("trace", false, "write SOAP traffic to stderr")
	flag.Parse()

	if *diskSize <= 0 || *maxChanged <= 0 {
		fatalf("-disk-size and -max-changed-bytes must be positive")
	}
	defaultDiskSize = roundUp(*diskSize, kib)
	maxChangedBytes = *maxChanged
	simulator.Trace = *trace

	var cert *tls.Certificate
	if *tlsCert != "" || *tlsKey != "" {
		if *tlsCert == "" || *tlsKey == "" {
			fatalf("-tlscert and -tlskey go together")
		}
		c, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fatalf("loading TLS certificate: %v", err)
		}
		cert = &c
	}

	root := *dir
	if root == "" {
		tmp, err := ioutil.TempDir("", "lifeboat-vcsim-")
		if err != nil {
			fatalf("%v", err)
		}
		root = tmp
		defer os.RemoveAll(tmp)
	}
	root, err := filepath.Abs(root)
	if err != nil {
		fatalf("%v", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		fatalf("%v", err)
	}

	var model *simulator.Model
	if *esx {
		model = simulator.ESX()
	} else {
		model = simulator.VPX()
		model.Datacenter = *dc
		model.Cluster = *cluster
		model.ClusterHost = *hosts
		model.Host = *standalone
		model.Portgroup = *pg
	}
	model.Machine = 0   // created below, with real disks
	model.Datastore = 0 // created below, under -dir
	model.Autostart = false
	defer model.Remove()
	if err := model.Create(); err != nil {
		fatalf("creating the inventory: %v", err)
	}

	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		fatalf("in-process client: %v", err)
	}
	if err := createDatastores(ctx, client, root, *ds); err != nil {
		fatalf("creating datastores: %v", err)
	}
	if err := createVMs(ctx, client, *vms, defaultDiskSize, *esx); err != nil {
		fatalf("creating VMs: %v", err)
	}

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, *password)}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
		if cert != nil {
			model.Service.TLS.Certificates = []tls.Certificate{*cert}
		}
	}
	model.Service.RegisterEndpoints = true
	srv := model.Service.NewServer()
	srv.Config.Handler = &front{
		svc:      model.Service,
		mux:      model.Service.ServeMux,
		client:   client,
		username: *username,
		password: *password,
		esx:      *esx,
	}
	srv.Config.ErrorLog = log.New(os.Stderr, "http: ", log.LstdFlags)

	logf("datastores under %s", root)
	fmt.Printf("LISTENING %s://%s/sdk\n", srv.URL.Scheme, srv.URL.Host)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
}
