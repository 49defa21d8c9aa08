"""Acc@k, reports, bootstrap tests, similarity bins, and dev accuracy for checkpoint selection."""
