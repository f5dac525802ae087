"""The inbox drill's consuming service: one `@EventHandler` booking each event once (scanned by its consumer)."""
