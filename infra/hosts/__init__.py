"""Ways to get a machine; each yields `Host`s with a Docker provider for that machine."""
