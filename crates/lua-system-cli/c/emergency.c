/* Lua 5.2 to 5.5 answer an allocation their allocator refused (the memory limit, or the process
 * out of memory) with an emergency collection, luaC_fullgc(L, 1), and then try again. That
 * cycle runs no finalizers, so the module's cycle sentinel, whose finalizer counts cycles, does
 * not see it end: num_gc missed one cycle per emergency (against a weak-table witness, 590
 * counted where at least 620 ran, filling a 16 MiB limit 20 times).
 *
 * The runner links Lua with `--wrap=luaC_fullgc` (build.rs): after an emergency collection the
 * module reports the cycle, with the heap it left. Only the function's signature is needed,
 * the same in every release that has it. */
typedef struct lua_State lua_State;

void __real_luaC_fullgc(lua_State *L, int isemergency);
void lua_system_cli_emergency_collection(lua_State *L);

void __wrap_luaC_fullgc(lua_State *L, int isemergency) {
  __real_luaC_fullgc(L, isemergency);
  if (isemergency)
    lua_system_cli_emergency_collection(L);
}
