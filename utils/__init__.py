"""Shared plumbing, no ML and no data: one-line user errors (errors), atomic and fsynced file IO (jsonl), named
crash points for the fault-injection tests (faults), hub access (hub), and the accelerate / DeepSpeed setup
of the trainers (distributed). Every other package may import it; it imports none of them."""
