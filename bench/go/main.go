// The Go original's measurement counterpart: the spec's functions as the Go original implements
// them (runtime.ReadMemStats, runtime.GC, debug.SetGCPercent...) in gopher-lua, timed by the same
// kind of Lua loop as bench/calls.lua. Build with Debian's packages, offline:
//
//	apt-get install golang-go golang-github-yuin-gopher-lua-dev
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o /tmp/system-go bench/go/main.go
//	/tmp/system-go
package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	lua "github.com/yuin/gopher-lua"
)

func memStats(L *lua.LState) int {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	t := L.NewTable()
	for _, f := range []struct {
		k string
		v uint64
	}{
		{"alloc", m.Alloc}, {"total_alloc", m.TotalAlloc}, {"sys", m.Sys}, {"heap_alloc", m.HeapAlloc},
		{"heap_sys", m.HeapSys}, {"heap_idle", m.HeapIdle}, {"heap_in_use", m.HeapInuse},
		{"heap_released", m.HeapReleased}, {"heap_objects", m.HeapObjects}, {"stack_in_use", m.StackInuse},
		{"stack_sys", m.StackSys}, {"mspan_in_use", m.MSpanInuse}, {"mspan_sys", m.MSpanSys},
		{"num_gc", uint64(m.NumGC)}, {"next_gc", m.NextGC},
	} {
		t.RawSetString(f.k, lua.LNumber(f.v))
	}
	L.Push(t)
	L.Push(lua.LNil)
	return 2
}

func allocated(L *lua.LState) int {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	L.Push(lua.LNumber(m.HeapAlloc))
	L.Push(lua.LNil)
	return 2
}

func gc(L *lua.LState) int {
	runtime.GC()
	L.Push(lua.LTrue)
	L.Push(lua.LNil)
	return 2
}

func getGCPercent(L *lua.LState) int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	L.Push(lua.LNumber(p))
	L.Push(lua.LNil)
	return 2
}

func numCPU(L *lua.LState) int {
	L.Push(lua.LNumber(runtime.NumCPU()))
	L.Push(lua.LNil)
	return 2
}

func pid(L *lua.LState) int {
	L.Push(lua.LNumber(os.Getpid()))
	L.Push(lua.LNil)
	return 2
}

func hostname(L *lua.LState) int {
	h, _ := os.Hostname()
	L.Push(lua.LString(h))
	L.Push(lua.LNil)
	return 2
}

func perCall(L *lua.LState, call string, n int) time.Duration {
	fn, err := L.LoadString(fmt.Sprintf("local system = ... for _ = 1, %d do local a, b = %s end", n, call))
	if err != nil {
		panic(err)
	}
	best := time.Duration(1<<63 - 1)
	samples := []time.Duration{}
	for i := 0; i < 5; i++ {
		L.Push(fn)
		L.Push(L.GetGlobal("system"))
		start := time.Now()
		if err := L.PCall(1, 0, nil); err != nil {
			panic(err)
		}
		d := time.Since(start) / time.Duration(n)
		samples = append(samples, d)
		if d < best {
			best = d
		}
	}
	// median of 5
	for i := range samples {
		for j := i + 1; j < len(samples); j++ {
			if samples[j] < samples[i] {
				samples[i], samples[j] = samples[j], samples[i]
			}
		}
	}
	return samples[2]
}

func main() {
	L := lua.NewState()
	defer L.Close()
	system := L.NewTable()
	for name, f := range map[string]lua.LGFunction{
		"mem_stats": memStats, "allocated": allocated, "gc": gc, "get_gc_percent": getGCPercent,
		"num_cpu": numCPU, "pid": pid, "hostname": hostname,
	} {
		system.RawSetString(name, L.NewFunction(f))
	}
	L.SetGlobal("system", system)
	empty := perCall(L, "nil, nil", 100000)
	fmt.Printf("%-22s %12s\n", "call (Go original)", "ns/call")
	for _, c := range []struct {
		call string
		n    int
	}{
		{"system.allocated()", 2000}, {"system.mem_stats()", 2000}, {"system.gc()", 200},
		{"system.get_gc_percent()", 2000}, {"system.num_cpu()", 100000}, {"system.pid()", 100000},
		{"system.hostname()", 50000}, {`collectgarbage("count")`, 2000},
	} {
		fmt.Printf("%-22s %12.1f\n", c.call, float64(perCall(L, c.call, c.n)-empty))
	}
}
