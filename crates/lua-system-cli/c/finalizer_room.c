/* Lua 5.4.9 and 5.5.1 run a collection step's finalizers only with 40 free stack slots
 * (luaD_checkminstack), growing the stack for them if need be. At the very end of the stack,
 * where only the slots kept for error handling are left, that growth gives the thread the size
 * that means "an overflow is being handled", and the next check of the stack then raises
 * "error in error handling": a program's own stack overflow lost its message and traceback
 * whenever a finalizer was due, and the module's cycle sentinel is due after every cycle.
 *
 * The runner links Lua with `--wrap=luaD_checkminstack`: there, the finalizers wait for a later
 * step, as Lua does when the stack cannot grow, and the stack is left alone. Compiled against
 * the private headers of the very release the runner embeds (build.rs). */
#include "lua.h"
#include "lstate.h"
#include "ldo.h"

#ifndef LUAI_MAXSTACK /* 5.5 defines it in ldo.c */
#define LUAI_MAXSTACK 1000000
#endif

int __real_luaD_checkminstack(lua_State *L);

int __wrap_luaD_checkminstack(lua_State *L) {
  if ((int)(L->top.p - L->stack.p) + BASIC_STACK_SIZE > LUAI_MAXSTACK)
    return 0; /* only the room kept for errors is left: no finalizer now */
  return __real_luaD_checkminstack(L);
}
