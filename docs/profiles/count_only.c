/* The floor for issue 5: a module whose keyspace callback only counts events.
 * Whatever it costs per SET is Redis's own module-notification machinery
 * (moduleNotifyKeyspaceEvent: a temporary client and context per subscriber per event).
 * Built by scripts/profile.sh and examples/bench/:
 *   cc -O2 -shared -fPIC -I<redis-module-2.0.8/src/include> -o count_only.so count_only.c */
#define REDISMODULE_MAIN
#include "redismodule.h"

static unsigned long long count;

static int on_keyspace_event(RedisModuleCtx *ctx, int type, const char *event,
                             RedisModuleString *key) {
    (void)ctx; (void)type; (void)event; (void)key;
    count++;
    return REDISMODULE_OK;
}

int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc) {
    (void)argv; (void)argc;
    if (RedisModule_Init(ctx, "countonly", 1, REDISMODULE_APIVER_1) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
    /* The classes of our module's `A` (a SET raises the same single event under `$`). */
    return RedisModule_SubscribeToKeyspaceEvents(ctx, REDISMODULE_NOTIFY_ALL, on_keyspace_event);
}
