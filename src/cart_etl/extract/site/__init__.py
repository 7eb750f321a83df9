"""Site deliveries (files or tables) as a site mapping (``mappings/sites/<site>.yaml``) says."""
