"""cart_etl: CD19 CAR-T CRS data pipeline."""
