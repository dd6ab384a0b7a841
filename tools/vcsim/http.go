package main

// The HTTP front: SOAP (the stock handler, guarded), datastore file access under /folder
// like vCenter (the test-only hooks under /lifeboat-sim/ are in hooks.go).

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"io/ioutil"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

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
