use lua_system::SystemLua;

#[test]
fn smoke() {
    let lua = unsafe { SystemLua::new().unwrap() };
    lua.load(
        r#"
        local system = require("system")
        for k, v in pairs(system.mem_stats()) do print(k, v) end
        print("allocated", system.allocated())
        print("heap_objects", system.heap_objects())
        print("gc", system.gc())
        print("num_gc", system.mem_stats().num_gc)
        print("set", system.set_gc_percent(50), system.get_gc_percent())
        print("set bad", system.set_gc_percent("x"))
        print("set 1.5", system.set_gc_percent(1.5))
        print("goroutines", system.num_goroutines())
        local cos = {}
        for i = 1, 1000 do cos[i] = coroutine.create(function() coroutine.yield() end) end
        print("goroutines+1000", system.num_goroutines())
        cos = nil; system.gc(); system.gc()
        print("goroutines after", system.num_goroutines())
        print("procs", system.go_max_procs(), system.num_cpu())
        print("host", system.hostname(), system.pid())
        local n = system.heap_objects(); local t = {}; print("delta", system.heap_objects() - n)
    "#,
    )
    .exec()
    .unwrap();
    println!("{:?}", lua.mem_stats().unwrap());
}
