//! Network-namespace work on dedicated OS threads, with netlink queries inside the namespace.
