/* The version line lua.c prints for -v, from the headers of the Lua the runner embeds. */
#include "lua.h"

#if LUA_VERSION_NUM == 501
const char lua_system_version_line[] = LUA_RELEASE "  " LUA_COPYRIGHT;
#else
const char lua_system_version_line[] = LUA_COPYRIGHT;
#endif
