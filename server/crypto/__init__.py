"""Keys and secrets: token and password hashes, policy signing and its key rotations,
machines' enrollment proofs, connector secrets sealed at rest."""
