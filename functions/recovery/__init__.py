"""The recovery flow: its ASL definitions, the state handlers, and the local runner."""
