/*
 * A C host putting system.so through its lifecycle, for valgrind memcheck
 * (scripts/valgrind-module): the module in two states at once, required again after
 * package.loaded.system = nil, loaded into a state whose collector is stopped, every state
 * closed. Usage: lifecycle DIR-HOLDING-system.so
 * Builds against any of Lua 5.1 to 5.4 and LuaJIT: it uses only their common API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static const char *module_dir;

/* The process's data memory (VmData), in kB. */
static long vm_data_kb(void) {
  char line[256];
  long kb = -1;
  FILE *status = fopen("/proc/self/status", "r");
  if (status == NULL) return -1;
  while (fgets(line, sizeof line, status))
    if (sscanf(line, "VmData: %ld kB", &kb) == 1) break;
  fclose(status);
  return kb;
}

static void run(lua_State *L, const char *code) {
  if (luaL_dostring(L, code) != 0) {
    fprintf(stderr, "lifecycle: %s\n", lua_tostring(L, -1));
    exit(1);
  }
}

static lua_State *new_state(int stop_collector) {
  char setup[4096];
  lua_State *L = luaL_newstate();
  if (L == NULL) { fprintf(stderr, "lifecycle: no state\n"); exit(1); }
  if (stop_collector) lua_gc(L, LUA_GCSTOP, 0);
  luaL_openlibs(L);
  /* Lua files off the path: a system-wide luasystem's system/init.lua would be found first. */
  snprintf(setup, sizeof setup, "package.path = '' package.cpath = '%s/?.so;' .. package.cpath", module_dir);
  run(L, setup);
  return L;
}

/* Uses every function; checks the return convention and a few figures. */
static const char *EXERCISE =
  "local s = require('system')\n"
  "assert(s.allocated() > 0 and s.pid() > 0 and #s.hostname() > 0)\n"
  "assert(s.gc() == true)\n"
  "local t = {} for i = 1, 1000 do t[i] = { i } end\n"
  "local co = coroutine.create(function() coroutine.yield() end) coroutine.resume(co)\n"
  "assert(s.num_goroutines() >= 2)\n"
  "local previous = s.set_gc_percent(50) assert(s.get_gc_percent() == 50) s.set_gc_percent(previous)\n"
  "assert(s.go_max_procs() >= 1 and s.num_cpu() >= 1)\n"
  "local stats = assert(s.mem_stats()) assert(stats.alloc > 0 and stats.num_gc >= 1)\n"
  "local ok, err = s.set_gc_percent('x') assert(ok == nil and err:find('set_gc_percent'))\n";

int main(int argc, char **argv) {
  lua_State *a, *b, *c;
  if (argc != 2 && argc != 3) { fprintf(stderr, "usage: lifecycle DIR [--under-valgrind]\n"); return 2; }
  module_dir = argv[1];
  /* Under valgrind, its own bookkeeping grows the process's data memory: no growth check. */
  int check_growth = !(argc == 3 && strcmp(argv[2], "--under-valgrind") == 0);

  /* Two states at once, each with its own record. */
  a = new_state(0);
  b = new_state(0);
  run(a, EXERCISE);
  run(b, EXERCISE);
  run(a, "collectgarbage('stop') A = require('system').mem_stats().num_gc");
  run(b, "for _ = 1, 3 do require('system').gc() end");
  run(a, "assert(require('system').mem_stats().num_gc == A, 'states are counted apart') collectgarbage('restart')");

  /* Required again after package.loaded.system = nil: same state, same counts. */
  run(a, "local before = require('system') package.loaded.system = nil\n"
         "local again = require('system') assert(again ~= before)\n"
         "local n = before.mem_stats().num_gc again.gc()\n"
         "assert(before.mem_stats().num_gc == again.mem_stats().num_gc and again.mem_stats().num_gc > n)");
  run(a, EXERCISE);
  lua_close(b);
  run(a, EXERCISE);

  /* pid() is cached, and the cache is cleared in a forked child. */
  run(a, "PARENT = require('system').pid()");
  {
    pid_t child = fork();
    if (child == 0) {
      char check[256];
      snprintf(check, sizeof check, "assert(require('system').pid() == %ld and PARENT ~= %ld, 'pid after fork')",
               (long)getpid(), (long)getpid());
      run(a, check);
      _exit(0);
    } else {
      int status = 0;
      waitpid(child, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) { fprintf(stderr, "lifecycle: pid in child\n"); return 1; }
      run(a, "assert(require('system').pid() == PARENT)");
    }
  }
  lua_close(a);

  /* Loaded while the collector is stopped: it stays stopped until asked. */
  c = new_state(1);
  run(c, "local s = require('system')\n"
         "local n = s.mem_stats().num_gc for i = 1, 10000 do local _ = { i } end\n"
         "assert(s.mem_stats().num_gc == n, 'no cycle while stopped')\n"
         "s.gc() assert(s.mem_stats().num_gc > n)\n"
         "s.set_gc_percent(100)");
  run(c, EXERCISE);
  lua_close(c);

  /* Many states opened, given the module and closed: nothing stays behind. In LuaJIT the
     module's allocator is in front of LuaJIT's own, whose arena (mapped memory, which memcheck
     does not report) is destroyed at close only if that allocator is back by then. */
  {
    int i;
    long before;
    for (i = 0; i < 8; i++) { lua_State *w = new_state(0); run(w, EXERCISE); lua_close(w); }
    before = vm_data_kb();
    for (i = 0; i < 64; i++) { lua_State *w = new_state(0); run(w, EXERCISE); lua_close(w); }
    if (check_growth && before >= 0 && vm_data_kb() - before > 4096) {
      fprintf(stderr, "lifecycle: 64 closed states left %ld kB behind\n", vm_data_kb() - before);
      return 1;
    }
  }
  printf("lifecycle: ok\n");
  return 0;
}
