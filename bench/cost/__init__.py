"""Cost metrics: NFE, MACs (fvcore, paper and complete conventions), schedule cost and latency."""
