"""Model families: tree baselines (:mod:`.baselines`); image models arrive as their own modules."""
