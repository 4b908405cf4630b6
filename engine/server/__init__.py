"""The backend's aiohttp application (`ridesync serve`): the class hub now, the sync endpoint next."""
