/* The fields of Lua's private structs that crates/lua-system/src/ffi/internals.rs reads, as
 * this Lua release's own headers lay them out: one "NAME value" line each, with the names of
 * internals.rs's `layout!` tables. Compiled against a Lua source tree by the unit test
 * `the_layout_is_the_vendored_headers` (internals.rs), which compares the two.
 *
 *   cc -I LUA_SOURCE_DIR tests/c/offsets.c -o offsets && ./offsets
 */
#include <stddef.h>
#include <stdio.h>

#ifdef LUAJIT
#include "lj_obj.h"
#include "lj_gc.h"
#else
#include "lua.h"
#include "lstate.h"
#include "lgc.h"
#endif

#define SHOW(name, value) printf("%s %lu\n", name, (unsigned long)(value))

int main(void) {
#if defined(LUAJIT)
  SHOW("THREAD_GLOBAL", offsetof(lua_State, glref));
  SHOW("FREALLOC", offsetof(global_State, allocf));
  SHOW("UD", offsetof(global_State, allocd));
  SHOW("TOTAL", offsetof(global_State, gc.total));
  SHOW("THRESHOLD", offsetof(global_State, gc.threshold));
  SHOW("GCSTATE", offsetof(global_State, gc.state));
  SHOW("ESTIMATE", offsetof(global_State, gc.estimate));
  SHOW("PAUSE", offsetof(global_State, gc.pause));
  SHOW("REGISTRY", offsetof(global_State, registrytv));
  SHOW("STATE_PAUSE", GCSpause);
  SHOW("STATES", GCSfinalize + 1);
  SHOW("CFUNCTION_F", offsetof(GCfuncC, f));
#elif LUA_VERSION_NUM == 501
  SHOW("THREAD_GLOBAL", offsetof(lua_State, l_G));
  SHOW("FREALLOC", offsetof(global_State, frealloc));
  SHOW("UD", offsetof(global_State, ud));
  SHOW("GCSTATE", offsetof(global_State, gcstate));
  SHOW("THRESHOLD", offsetof(global_State, GCthreshold));
  SHOW("TOTALBYTES", offsetof(global_State, totalbytes));
  SHOW("ESTIMATE", offsetof(global_State, estimate));
  SHOW("PAUSE", offsetof(global_State, gcpause));
  SHOW("REGISTRY", offsetof(global_State, l_registry));
  SHOW("STATE_PAUSE", GCSpause);
  SHOW("STATES", GCSfinalize + 1);
  SHOW("CFUNCTION_F", offsetof(CClosure, f));
#elif LUA_VERSION_NUM <= 504
  SHOW("THREAD_GLOBAL", offsetof(lua_State, l_G));
  SHOW("FREALLOC", offsetof(global_State, frealloc));
  SHOW("UD", offsetof(global_State, ud));
  SHOW("TOTALBYTES", offsetof(global_State, totalbytes));
  SHOW("GCDEBT", offsetof(global_State, GCdebt));
  SHOW("ESTIMATE", offsetof(global_State, GCestimate));
  SHOW("REGISTRY", offsetof(global_State, l_registry));
  SHOW("GCSTATE", offsetof(global_State, gcstate));
  SHOW("GCKIND", offsetof(global_State, gckind));
  SHOW("PAUSE", offsetof(global_State, gcpause));
  SHOW("STATE_PAUSE", GCSpause);
  SHOW("STATES", GCSpause + 1);
#if LUA_VERSION_NUM == 504
  SHOW("GENMINORMUL", offsetof(global_State, genminormul));
  SHOW("GENMAJORMUL", offsetof(global_State, genmajormul));
  SHOW("GCSTOPEM", offsetof(global_State, gcstopem));
  SHOW("GCSTP", offsetof(global_State, gcstp));
  SHOW("KIND_GENERATIONAL", KGC_GEN);
#else
  SHOW("GCRUNNING", offsetof(global_State, gcrunning));
#endif
#if LUA_VERSION_NUM == 502
  SHOW("MAJORINC", offsetof(global_State, gcmajorinc));
  SHOW("KIND_GENERATIONAL", KGC_GEN);
#endif
#elif LUA_VERSION_NUM == 505
  SHOW("THREAD_GLOBAL", offsetof(lua_State, l_G));
  SHOW("FREALLOC", offsetof(global_State, frealloc));
  SHOW("UD", offsetof(global_State, ud));
  SHOW("TOTALBYTES", offsetof(global_State, GCtotalbytes));
  SHOW("GCDEBT", offsetof(global_State, GCdebt));
  SHOW("MARKED", offsetof(global_State, GCmarked));
  SHOW("MAJORMINOR", offsetof(global_State, GCmajorminor));
  SHOW("REGISTRY", offsetof(global_State, l_registry));
  SHOW("PARAMS", offsetof(global_State, gcparams));
  SHOW("GCSTATE", offsetof(global_State, gcstate));
  SHOW("GCKIND", offsetof(global_State, gckind));
  SHOW("GCSTOPEM", offsetof(global_State, gcstopem));
  SHOW("GCSTP", offsetof(global_State, gcstp));
  SHOW("STATE_PAUSE", GCSpause);
  SHOW("STATES", GCSpause + 1);
  SHOW("KIND_INCREMENTAL", KGC_INC);
  SHOW("PARAM_MINORMUL", LUA_GCPMINORMUL);
  SHOW("PARAM_MINORMAJOR", LUA_GCPMINORMAJOR);
  SHOW("PARAM_PAUSE", LUA_GCPPAUSE);
#else
#error "a Lua release internals.rs does not know"
#endif
  return 0;
}
