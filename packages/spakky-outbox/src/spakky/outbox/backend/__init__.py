"""The storage author's kit: claim policy, driver clients, transaction nesting, wake-up signal."""
