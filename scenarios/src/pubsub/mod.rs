//! Publish/subscribe: the message-queue checkers over a recorded history.

pub mod checker;
