//! Who may configure the module. Redis 7.0 gives module commands no ACL category (the `admin`
//! flag does not put them in `@admin`, and `RedisModule_SetCommandACLCategories` only exists
//! from 7.2), so `-@admin` alone would not stop a user. The commands therefore ask Redis
//! whether the caller may run `CONFIG SET`: whoever may reconfigure Redis may reconfigure this.
//! Where the server can (Redis 7.2+, Valkey 8) the commands also carry CONFIG SET's categories
//! (`lib.rs`), so `-@admin` refuses them natively; the check stays: one rule on every server.

use std::ffi::c_int;

use redis_module::{raw, Context, RedisError, RedisString};

/// `Ok` if the calling user may run `CONFIG SET`. Not for commands from the master's
/// replication stream or the AOF: Redis 7.0 crashes asking for the user of those clients.
pub fn require_config_permission(ctx: &Context, command: &str) -> Result<(), RedisError> {
    // SAFETY: FFI calls with the command's context; every string and user we get is freed
    // before returning, and the argv array outlives the check.
    unsafe {
        let (Some(user_name), Some(get_user), Some(check), Some(free_user)) = (
            raw::RedisModule_GetCurrentUserName,
            raw::RedisModule_GetModuleUserFromUserName,
            raw::RedisModule_ACLCheckCommandPermissions,
            raw::RedisModule_FreeModuleUser,
        ) else {
            return Ok(());
        };
        let name = user_name(ctx.ctx);
        if name.is_null() {
            return Ok(());
        }
        let name = RedisString::from_redis_module_string(std::ptr::null_mut(), name);
        let user = get_user(name.inner);
        if user.is_null() {
            return Ok(());
        }
        let args: Vec<RedisString> = ["CONFIG", "SET", "maxmemory", "0"]
            .iter()
            .map(|a| RedisString::create(None, *a))
            .collect();
        let mut argv: Vec<*mut raw::RedisModuleString> = args.iter().map(|a| a.inner).collect();
        let allowed =
            check(user, argv.as_mut_ptr(), argv.len() as c_int) == raw::REDISMODULE_OK as c_int;
        free_user(user);
        if allowed {
            Ok(())
        } else {
            Err(RedisError::String(format!(
                "NOPERM this user has no permissions to run the '{command}' command \
                 (it needs the permission to run CONFIG SET)"
            )))
        }
    }
}
