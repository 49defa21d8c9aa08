"""The linker: mentions -> ranked concepts (beam, rerank, hybrid), hybrid evidence and fusion."""
