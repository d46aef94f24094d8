"""End-to-end tests: real daemons in network namespaces (root), no mocks of the network."""
