import sys

from src.kaggle.cli import main

sys.exit(main())
