"""What several test modules share: data, pictures, loaders."""
