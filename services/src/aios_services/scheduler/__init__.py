"""The scheduler service: admission, policy queues, dispatch and accounting of syscalls."""
