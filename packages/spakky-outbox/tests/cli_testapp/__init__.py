"""An in-memory outbox shared by a test and the ``spakky-outbox`` command it runs (``--scan cli_testapp.pods``)."""
