"""KFP components: one folder per stage, each a thin call into the `imagelingo` library."""
