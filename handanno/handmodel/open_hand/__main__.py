"""``python -m handanno.handmodel.open_hand --out handanno/assets``: regenerate the shipped model files."""

from handanno.handmodel.open_hand.assets import main

if __name__ == "__main__":
    main()
