//! spoor-server: everything behind the receivers. This worktree holds the block format
//! (`block`) and the object-store layer it is written to (`storage`).

pub mod block;
pub mod storage;
