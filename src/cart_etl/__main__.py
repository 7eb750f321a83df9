"""python -m cart_etl."""

from cart_etl.cli import main

main()
