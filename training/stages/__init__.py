"""The training stages: positive, mining (and cross-fitting, iteration), preference (DPO family), fusion."""
