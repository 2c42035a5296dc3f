//! Where code off the Redis main thread writes its log lines. The Redis shell gives the Redis
//! log at load; unit tests give their own, so the publisher needs nothing of Redis.

#[derive(Clone, Copy)]
pub struct Log {
    pub warning: fn(&str),
    pub notice: fn(&str),
}

impl Log {
    pub fn warning(&self, msg: &str) {
        (self.warning)(msg);
    }

    pub fn notice(&self, msg: &str) {
        (self.notice)(msg);
    }
}
