"""One construct per concern; :mod:`cdk.stacks` composes them into stacks."""
