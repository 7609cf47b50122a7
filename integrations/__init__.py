"""fastpid.integrations: adapters for training-time PID methods (SPICE, ECS-async, SynIB, DynCIM) arrive in later work; this package is intentionally empty for now."""
